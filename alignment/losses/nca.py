"""NCA: noise contrastive alignment, pairwise form (``nca_pair``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


@register_preference_loss("nca_pair")
def nca_pair_loss(batch: PreferenceBatch, *, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """NCA, Noise Contrastive Alignment (Chen et al., NeurIPS 2024, arXiv 2402.05369), the pairwise-preference loss.

    ``L = −log σ(β·r_w) − ½·log σ(−β·r_w) − ½·log σ(−β·r_l)`` with ``r = ℓ_θ(y) − ℓ_ref(y)``. Shapes: ``[B]`` out.
    ``beta`` (default 0.1, TRL's) must be > 0. Unlike DPO it scores each response's own reward rather than their
    difference, so the chosen likelihood is not pushed down along with the rejected one.

    Paper vs code: the paper's pairwise NCA (K = 2 responses, binary preference) is exactly this expression; equal to
    TRL 1.16 ``loss_type="nca_pair"``.
    """
    require_positive("beta", beta)
    chosen = beta * batch.chosen_logratios
    rejected = beta * batch.rejected_logratios
    losses = -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)
    return losses, {}
