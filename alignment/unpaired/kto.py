"""KTO: Kahneman-Tversky Optimisation (Ethayarajh et al. 2024, arXiv 2402.01306), the ``kto`` unpaired loss."""

from __future__ import annotations

import torch

from ..registry import require_positive
from .registry import UNPAIRED_LOSSES, by_label


@UNPAIRED_LOSSES.register("kto")
def kto_loss(logratios: torch.Tensor, labels: torch.Tensor, *, reference_point: torch.Tensor, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """KTO (Ethayarajh et al., arXiv 2402.01306): prospect-theoretic value of each reward against a reference point.

    Shapes: ``logratios`` [B] (r = log π_θ(y|x) − log π_ref(y|x), summed over completion tokens), ``labels`` [B]
    bool (True = desirable), ``reference_point`` a scalar (z_ref, `kl_reference_point`: detached, ≥ 0); out [B]::

        desirable:    λ_D · (1 − σ(β · (r − z_ref)))
        undesirable:  λ_U · (1 − σ(β · (z_ref − r)))

    The paper's Eq. 7 writes the loss as ``λ_y − v(x, y)`` with ``v = λ_D σ(β(r − z_0))`` or ``λ_U σ(β(z_0 − r))``;
    ``λ_y − v = λ_y (1 − σ(·))`` is the same. Defaults β = 0.1 and λ_D = λ_U = 1 are the paper's and TRL's; with
    unequal class counts the paper (Eq. 8) advises ``λ_D n_D / (λ_U n_U) ∈ [1, 4/3]`` (TRL warns outside it).

    Paper vs code: the paper defines z_0 = KL(π_θ(y'|x) ‖ π_ref(y'|x)) over the whole distribution, estimated in
    practice from mismatched pairs of the same micro-batch, clamped at 0 and not back-propagated (both HALOs' and TRL's
    code; see `kl_reference_point` for how each reduces it across processes). HALOs' ``KTOTrainer.loss`` and TRL 1.16
    ``KTOTrainer._compute_loss`` (``loss_type="kto"``) compute exactly this per row; both concatenate the desirable
    then the undesirable rows before the mean, which this keeps in batch order (the mean is the same).
    """
    require_positive("beta", beta)
    return by_label(labels, 1.0 - torch.sigmoid(beta * (logratios - reference_point)),
                    1.0 - torch.sigmoid(beta * (reference_point - logratios)),
                    desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)
