"""The PPO / TRL clipped surrogate as a policy loss (``policy_loss: clipped``), and the surrogate function the other
clipped losses (`sign_clipped`, `hapo`) share.

Shapes: ``[B, T]`` per-token tensors (B completions, T completion positions); advantages may be ``[B, 1]`` (one per
completion, broadcast over tokens).

PPO clipped surrogate (the loss minimised, per token)::

    loss_t = -min(rho_t * A, clip(rho_t, 1 - eps_low, 1 + eps_high) * A)

Because of the min, only the upper bound can bind when A > 0 and only the lower bound when A < 0. The bounds are TRL's
own ``epsilon`` (below) and ``epsilon_high`` (above) config fields: NGRPO's official script uses 0.16 / 0.24, DAPO's
clip-higher 0.2 / 0.28.
"""

from __future__ import annotations

import torch

from .registry import POLICY_LOSSES


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float | torch.Tensor,
                      eps_high: float | torch.Tensor, by_advantage_sign: bool = False) -> torch.Tensor:
    """Per-token clipped surrogate loss ``-min(rho A, clip(rho, lo, hi) A)``, ``[B, T]``.

    Default: ``lo = 1 - eps_low``, ``hi = 1 + eps_high`` for every token (TRL's `epsilon`/`epsilon_high`; the NGRPO
    code's 0.16/0.24 and DAPO's clip-higher 0.2/0.28 are of this form). ``by_advantage_sign=True`` is the NGRPO paper's
    wording taken literally: a positive-advantage token gets the loose trust region ``1 +- eps_high``, a
    negative-advantage token the strict one ``1 +- eps_low``. Under the pessimistic min the two give the same loss
    (only hi binds for A > 0, only lo for A < 0), which `tests/test_group_rl_trainer.py` checks; the option exists
    to make that reading explicit in a recipe.
    """
    if by_advantage_sign:
        width = torch.where(advantages > 0, torch.as_tensor(eps_high), torch.as_tensor(eps_low))
        lo, hi = 1 - width, 1 + width
    else:
        lo, hi = 1 - torch.as_tensor(eps_low), 1 + torch.as_tensor(eps_high)
    lo = lo.to(ratio.dtype).to(ratio.device)
    hi = hi.to(ratio.dtype).to(ratio.device)
    clipped = torch.minimum(torch.maximum(ratio, lo), hi)
    return -torch.minimum(ratio * advantages, clipped * advantages)


def clip_metrics(ratio: torch.Tensor, advantages: torch.Tensor, low: torch.Tensor,
                 high: torch.Tensor) -> dict[str, torch.Tensor]:
    """TRL's clip statistics, per token ``[B, T]``: a token is clipped low when its ratio is below ``1 - low`` with
    A < 0 and high when above ``1 + high`` with A > 0 (where the clip removes its gradient). ``low`` / ``high``: the
    clip widths, scalars or broadcastable to ``ratio``."""
    is_low = (ratio < 1 - low) & (advantages < 0)
    is_high = (ratio > 1 + high) & (advantages > 0)
    return {"clip_ratio/low_mean": is_low.float(), "clip_ratio/high_mean": is_high.float(),
            "clip_ratio/region_mean": (is_low | is_high).float()}


@POLICY_LOSSES.register("clipped")
def clipped(*, ratio: torch.Tensor, advantages: torch.Tensor, epsilon_low: float,
            epsilon_high: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate with TRL's bounds 1 - `epsilon`, 1 + `epsilon_high` (TRL's own loss, on our path)."""
    low = torch.as_tensor(epsilon_low, device=ratio.device)
    high = torch.as_tensor(epsilon_high, device=ratio.device)
    return clipped_surrogate(ratio, advantages, epsilon_low, epsilon_high), clip_metrics(ratio, advantages, low, high)
