"""TRL's loss aggregations (grpo_trainer.py `_compute_loss`), keyed by its ``loss_type``: per-token loss -> scalar.

Used when a recipe sets ``policy_loss`` (our per-token loss replaces TRL's, its reduction stays TRL's). Every function
takes ``per_token_loss`` and ``mask`` ``[B, T]`` and the inputs it names among `AGGREGATION_INPUTS`:

* ``accumulation``: TRL turns off the Trainer's own loss scaling for gradient accumulation and divides inside the
  loss: the current accumulation steps in training, 1 in evaluation;
* ``max_completion_length``: the generation limit (``dr_grpo``'s constant normaliser);
* ``num_items_in_batch``: the loss tokens of the whole generation batch on all processes (TRL's input);
* ``num_processes``: the world size;
* ``generation_steps``: TRL's ``steps_per_generation`` in training, 1 in evaluation.
"""

from __future__ import annotations

import torch

from .registry import AGGREGATIONS


@AGGREGATIONS.register("grpo")
def sequence_mean(per_token_loss: torch.Tensor, mask: torch.Tensor, *, accumulation: float) -> torch.Tensor:
    """Token mean per sequence, then mean over sequences."""
    loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    return loss / accumulation


@AGGREGATIONS.register("bnpo")
def token_mean(per_token_loss: torch.Tensor, mask: torch.Tensor, *, accumulation: float) -> torch.Tensor:
    """Token mean over the local batch."""
    return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0) / accumulation


@AGGREGATIONS.register("dr_grpo")
def constant_normalizer(per_token_loss: torch.Tensor, mask: torch.Tensor, *, accumulation: float,
                        max_completion_length: int) -> torch.Tensor:
    """Token sum over ``B * max_completion_length`` (Dr. GRPO: no length bias)."""
    loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    return loss / accumulation


@AGGREGATIONS.register("dapo")
def global_token_mean(per_token_loss: torch.Tensor, mask: torch.Tensor, *, accumulation: float,
                      num_items_in_batch: torch.Tensor, num_processes: int, generation_steps: int) -> torch.Tensor:
    """Token sum over the loss tokens of the whole generation batch (all processes, all its optimisation steps)."""
    normalizer = num_items_in_batch.clamp(min=1.0) / num_processes
    normalizer = normalizer * accumulation / generation_steps
    return (per_token_loss * mask).sum() / normalizer
