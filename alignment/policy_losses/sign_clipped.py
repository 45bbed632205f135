"""Sign-dependent clipping (``policy_loss: sign_clipped``): NGRPO's trust-region wording taken literally.

NGRPO (arXiv 2509.18851) states its asymmetric clipping as: a positive-advantage token gets the loose trust region
1 +- `epsilon_high`, a negative-advantage token the strict one 1 +- `epsilon`. Under PPO's pessimistic min this equals
the default bounds (lower `epsilon`, upper `epsilon_high`; see `clipped.py`), which `tests/test_group_rl_trainer.py`
checks against TRL's loss; the entry exists to make that reading explicit in a recipe.
"""

from __future__ import annotations

import torch

from .clipped import clip_metrics, clipped_surrogate
from .registry import POLICY_LOSSES


@POLICY_LOSSES.register("sign_clipped")
def sign_clipped(*, ratio: torch.Tensor, advantages: torch.Tensor, epsilon_low: float,
                 epsilon_high: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate with the trust region 1 +- `epsilon_high` for A > 0 and 1 +- `epsilon` for A <= 0."""
    low = torch.as_tensor(epsilon_low, device=ratio.device)
    high = torch.as_tensor(epsilon_high, device=ratio.device)
    low = torch.where(advantages > 0, high, low)  # the width each token's own trust region has below 1
    loss = clipped_surrogate(ratio, advantages, epsilon_low, epsilon_high, by_advantage_sign=True)
    return loss, clip_metrics(ratio, advantages, low, high)
