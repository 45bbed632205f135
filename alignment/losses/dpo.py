"""DPO: the sigmoid (Bradley-Terry) preference loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


@register_preference_loss("sigmoid")
def sigmoid_loss(batch: PreferenceBatch, *, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (Rafailov et al., NeurIPS 2023, arXiv 2305.18290).

    ``L = −log σ(β · h)`` with ``h = [ℓ_θ(y_w) − ℓ_ref(y_w)] − [ℓ_θ(y_l) − ℓ_ref(y_l)]`` and ``ℓ`` the summed
    completion log-prob. Shapes: batch of ``B`` pairs in, ``[B]`` out. ``beta`` (default 0.1) is the KL-penalty
    strength; it must be positive. Equal to TRL's ``loss_type="sigmoid"`` with ``f_divergence_type="reverse_kl"``.
    """
    require_positive("beta", beta)
    return -F.logsigmoid(beta * batch.logratio_margin), {}
