"""Cooldown ("Upsample or Upweight?", Li et al., NAACL 2025, arXiv 2410.04579): the `cooldown` rule (temperature
shares on a schedule)."""

from __future__ import annotations

from typing import Sequence

import torch

from ..mixtures import CooldownSchedule
from .registry import register_domain_update


def _check_cooldown(*, high_temperature: float, low_temperature: float, switch_step: int | None) -> None:
    if switch_step is None:
        raise ValueError("cooldown: set `switch_step`, the update step from which `low_temperature` applies (the "
                         "paper switches halfway through training).")
    CooldownSchedule(high_temperature=high_temperature, low_temperature=low_temperature, switch_step=switch_step)


@register_domain_update("cooldown", inputs=("sizes",), check=_check_cooldown)
def cooldown(
    weights: torch.Tensor,
    *,
    step: int,
    sizes: Sequence[int] | torch.Tensor,
    high_temperature: float = 5.0,
    low_temperature: float = 1.0,
    switch_step: int | None = None,
) -> torch.Tensor:
    """Cooldown ("Upsample or Upweight?", Li et al., NAACL 2025, arXiv 2410.04579): temperature shares on a schedule.

    w = p(i; τ(step)) with p(i; τ) = n_i^(1/τ) / Σ_j n_j^(1/τ) and τ = ``high_temperature`` before ``switch_step``,
    ``low_temperature`` from it on (paper: τ=5 for the first half, then τ=1). Input ``sizes`` [K]: the domains'
    sizes n_i. A schedule, not feedback: the current ``weights`` only fix K. See `alignment.mixtures.CooldownSchedule`.
    """
    if len(sizes) != weights.numel():
        raise ValueError(f"cooldown: `sizes` must have one entry per domain ({weights.numel()}), got {len(sizes)}.")
    schedule = CooldownSchedule(high_temperature=high_temperature, low_temperature=low_temperature,
                                switch_step=switch_step)
    return schedule.shares_at(step, sizes)
