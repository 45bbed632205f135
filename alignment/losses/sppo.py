"""SPPO: self-play preference optimisation with hard win probabilities (``sppo_hard``)."""

from __future__ import annotations

import torch

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


@register_preference_loss("sppo_hard")
def sppo_hard_loss(batch: PreferenceBatch, *, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SPPO (Wu et al., arXiv 2405.00675, Eq. 4.7 / Algorithm 1) with the win probability set to 1 and 0.

    ``L = (r_w − 1/(2β))² + (r_l + 1/(2β))²`` with ``r = ℓ_θ(y) − ℓ_ref(y)``: each side's log-ratio is regressed to
    ``±1/(2β)``. Shapes: ``[B]`` out. ``beta`` (default 0.1, TRL's) must be > 0; it is ``1/η`` of the paper.

    Paper vs code: the paper regresses ``log(π_θ/π_t)(y)`` onto ``η·(P̂(y ≻ π_t) − ½)`` with ``P̂`` a soft win
    probability estimated by a preference model (PairRM) over several samples, and ``π_t`` the previous iterate.
    TRL 1.16 ``loss_type="sppo_hard"`` uses the hard version (``P̂ = 1`` for the chosen, 0 for the rejected) with
    the reference model as ``π_t``; this follows TRL.
    """
    require_positive("beta", beta)
    target = 0.5 / beta
    losses = (batch.chosen_logratios - target) ** 2 + (batch.rejected_logratios + target) ** 2
    return losses, {}
