"""APO: anchored preference optimisation, the ``apo_zero`` and ``apo_down`` variants."""

from __future__ import annotations

import torch

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


@register_preference_loss("apo_zero")
def apo_zero_loss(batch: PreferenceBatch, *, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """APO-zero (D'Oosterlinck et al., arXiv 2408.06266, Eq. 7): push the chosen reward up and the rejected one down.

    ``L = [1 − σ(β·r_w)] + σ(β·r_l)`` with ``r = ℓ_θ(y) − ℓ_ref(y)`` each side's summed log-ratio. Shapes: ``[B]``
    out. ``beta`` (default 0.1, TRL's) must be > 0. Use it when the chosen answers are better than the model's own
    (the "zero" anchor: each side's reward is anchored at 0 separately, unlike DPO which only sees the difference).

    Paper vs code: identical to the paper's Eq. 7 and to TRL 1.16 ``loss_type="apo_zero"``.
    """
    require_positive("beta", beta)
    losses = (1.0 - torch.sigmoid(beta * batch.chosen_logratios)) + torch.sigmoid(beta * batch.rejected_logratios)
    return losses, {}


@register_preference_loss("apo_down")
def apo_down_loss(batch: PreferenceBatch, *, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """APO-down (D'Oosterlinck et al., arXiv 2408.06266, Eq. 8): lower both likelihoods, the rejected one more.

    ``L = σ(β·r_w) + [1 − σ(β·(r_w − r_l))]`` with ``r = ℓ_θ(y) − ℓ_ref(y)``. Shapes: ``[B]`` out. ``beta`` (default
    0.1, TRL's) must be > 0. Use it when the chosen answers are worse than the model's own outputs.

    Paper vs code: identical to the paper's Eq. 8 and to TRL 1.16 ``loss_type="apo_down"``.
    """
    require_positive("beta", beta)
    losses = torch.sigmoid(beta * batch.chosen_logratios) + (1.0 - torch.sigmoid(beta * batch.logratio_margin))
    return losses, {}
