"""Model cards and pushing a finished run to the Hugging Face Hub.

`render_model_card` / `write_model_card` (built in `alignment.model_card`) produce the README.md of an output
directory; `push_folder_to_hub` uploads that directory (weights, tokenizer, card, `plots/`) in one commit, leaving
intermediate `checkpoint-*` folders and optimizer states behind. The Hub endpoint, token and upload protocol come
from the usual `huggingface_hub` environment variables (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_DISABLE_XET`, ...),
read when `huggingface_hub` is first imported; a recipe's `hub_token` is passed to the push explicitly and overrides
`HF_TOKEN`. `validate_hub_model_id` checks the repo id at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..model_card import framework_versions, render_model_card, write_model_card

__all__ = [
    "DEFAULT_IGNORE_PATTERNS",
    "framework_versions",
    "push_folder_to_hub",
    "render_model_card",
    "validate_hub_model_id",
    "write_model_card",
]

# Left out of a pushed output directory: intermediate checkpoints, optimizer / scheduler / RNG states, DeepSpeed
# shards, and the pickled TrainingArguments (`recipe.yaml` is the readable config; a pickle runs code when loaded).
# (`upload_folder` matches with fnmatch on the path relative to the folder, where `*` also matches `/`.)
DEFAULT_IGNORE_PATTERNS: list[str] = [
    "*training_args.bin",
    "checkpoint-*",
    "*/checkpoint-*",
    "global_step*",
    "*/global_step*",
    "*optimizer.pt",
    "*optimizer.bin",
    "*optimizer.safetensors",
    "*scheduler.pt",
    "*scaler.pt",
    "*rng_state*.pth",
    "*.lock",
    "wandb/*",
]


def validate_hub_model_id(*, hub_model_id: str | None, push_to_hub: bool, output_dir: str | os.PathLike) -> None:
    """ValueError at start-up, before any model is loaded, when the run would push to an invalid repo id.

    The id is `hub_model_id`, or the name of `output_dir` when that is unset and `push_to_hub` is on (the Trainer's
    and `finalize_run`'s fallback). Checked with `huggingface_hub.utils.validate_repo_id`, the client-side rules the
    upload itself applies, so a bad id fails here rather than after training.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if hub_model_id is None and not push_to_hub:
        return
    repo_id = hub_model_id if hub_model_id is not None else Path(output_dir).name
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        source = (f"`hub_model_id: {repo_id}`" if hub_model_id is not None else
                  f"`hub_model_id` is unset, so the repo is named after `output_dir` ({output_dir}), and {repo_id!r}")
        raise ValueError(
            f"{source} is not a valid Hub repo id ({str(err).rstrip('.')}). Set `hub_model_id` to `name` or "
            "`namespace/name`: letters, digits, '-', '_' and '.', at most 96 characters, not starting or ending with "
            "'-' or '.', no '--' or '..', not ending in '.git' (e.g. `hub_model_id: your-name/smollm2-135m-dpo`)."
        ) from None


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "Upload model trained with alignment",
    token: str | None = None,
    ignore_patterns: Sequence[str] | None = None,
) -> str:
    """Create `repo_id` if needed and upload `folder` to it in a single commit.

    Intermediate `checkpoint-*` folders, optimizer/scheduler/RNG states and DeepSpeed `global_step*` shards are left
    out (`DEFAULT_IGNORE_PATTERNS`, extended by `ignore_patterns`). `token` defaults to the usual resolution (`HF_TOKEN`
    or the saved login). Returns the URL of the commit (or of the repo if nothing changed and no commit was made).
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Nothing to push: {folder} is not a directory")
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    patterns = [*DEFAULT_IGNORE_PATTERNS, *(ignore_patterns or [])]
    commit = api.upload_folder(
        repo_id=repo_url.repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=patterns,
    )
    url = getattr(commit, "commit_url", None) or str(repo_url)
    return str(url)
