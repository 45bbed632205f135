"""Step-metric reductions over all processes, shared by the trainers.

Each trainer appends per-step scalars to TRL's ``self._metrics[mode][name]`` lists; the numbers must be global (every
rank logs the same value) and must not keep the graph. These functions take the trainer's `accelerate.Accelerator`
and return a Python number:
- `gather_mean`, `gather_std`, `gather_ratio`, `gather_total` gather with ``gather_for_metrics`` (in evaluation it
  drops the samples the sampler repeated to fill the last batch, as TRL's DPO/SFT metrics do);
- `global_masked_mean` all-reduces two sums (TRL's GRPO per-token statistics).
"""

from __future__ import annotations

import torch


def gather_mean(accelerator, value: torch.Tensor) -> float:
    """Mean of ``value`` (any shape, flattened) over the global batch."""
    value = value.detach().float()
    return accelerator.gather_for_metrics(value.reshape(-1)).mean().item()


def gather_std(accelerator, value: torch.Tensor) -> float:
    """Population standard deviation over the global batch (0 for a single example)."""
    value = accelerator.gather_for_metrics(value.detach().float().reshape(-1))
    return value.std(unbiased=False).item()


def gather_ratio(accelerator, numerator: torch.Tensor, denominator: torch.Tensor) -> float:
    """``Σ_ranks numerator / Σ_ranks denominator`` of two per-rank scalars; 0 when the denominator is 0.

    A global token-level mean: each rank passes its masked sum and its token count, so ranks with more tokens weigh
    more (a mean of per-rank means would not).
    """
    num = accelerator.gather_for_metrics(numerator.detach().float().reshape(1)).sum()
    den = accelerator.gather_for_metrics(denominator.detach().float().reshape(1)).sum()
    return (num / den).item() if den > 0 else 0.0


def gather_total(accelerator, value: torch.Tensor) -> int | float:
    """``Σ_ranks value`` of a per-rank scalar (e.g. a token count), keeping its dtype (an int stays an int)."""
    return accelerator.gather_for_metrics(value).sum().item()


def global_masked_mean(accelerator, values: torch.Tensor, mask: torch.Tensor) -> float:
    """``Σ values·mask / Σ mask`` over all ranks (all-reduce of the two sums; a zero mask counts as 1)."""
    values = values.detach().float()
    totals = torch.stack([(values * mask).sum(), mask.sum().float()])
    totals = accelerator.reduce(totals, reduction="sum")
    return (totals[0] / totals[1].clamp(min=1.0)).item()
