"""APO-zero, unpaired (D'Oosterlinck et al., arXiv 2408.06266): the ``apo_zero_unpaired`` unpaired loss."""

from __future__ import annotations

import torch

from ..registry import require_positive
from .registry import UNPAIRED_LOSSES, by_label


@UNPAIRED_LOSSES.register("apo_zero_unpaired")
def apo_zero_unpaired_loss(logratios: torch.Tensor, labels: torch.Tensor, *, beta: float = 0.1,
                           desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """APO-zero, unpaired (arXiv 2408.06266): desirable rewards pushed up, undesirable ones down, anchored at 0.

    Shapes: ``logratios`` [B] (r = log π_θ(y|x) − log π_ref(y|x), summed), ``labels`` [B] bool; out [B]::

        desirable:    λ_D · (1 − σ(β · r))
        undesirable:  λ_U · σ(β · r)

    Use it when the desirable completions are better than what the model already generates. It needs no reference
    point, so the trainer skips the forward passes on mismatched pairs (no KL estimate), and any data order works.

    Paper vs code: the paper's Eq. 7 is paired (``alignment.losses`` ``apo_zero``); this per-row split of its two
    terms is TRL 1.16's ``KTOTrainer`` ``loss_type="apo_zero_unpaired"``, with TRL's λ_D/λ_U weighting.
    """
    require_positive("beta", beta)
    return by_label(labels, 1.0 - torch.sigmoid(beta * logratios), torch.sigmoid(beta * logratios),
                    desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)
