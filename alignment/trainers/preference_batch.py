"""What a collated preference batch holds, and the `PreferenceBatch` a `PreferenceTrainer` step builds from it.

A collated batch (TRL's preference collator, then `ExtraColumnsCollator`) stacks the chosen rows over the rejected
ones: ``input_ids`` / ``attention_mask`` / ``completion_mask`` ``[2B, L]``, plus the per-example dataset columns
the loss registry declares (`PER_EXAMPLE_COLUMNS`, ``[B]`` each). `model_inputs` is what the model is called with.
"""

from __future__ import annotations

from typing import Any

import torch

from ..losses.registry import _COLUMN_EXTRAS as PER_EXAMPLE_COLUMNS  # lead: switch to preference_columns() at merge

# Batch keys the model is never called with: the masks and (TRL's precompute path) reference sums that the step
# reads itself, and the per-example columns that only the losses read.
NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps", *PER_EXAMPLE_COLUMNS})


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the model's forward for ``batch`` (no KV cache: one full-sequence pass)."""
    kwargs = {key: value for key, value in batch.items() if key not in NON_MODEL_KEYS}
    kwargs["use_cache"] = False
    return kwargs


def completion_labels(batch: dict[str, Any]) -> torch.Tensor:
    """``[2B, L]`` labels for the fused LM head: the token ids on completion tokens, -100 on prompt and padding."""
    return batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
