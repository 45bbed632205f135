"""BCO: binary classifier optimisation, pairwise form (``bco_pair``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


@register_preference_loss("bco_pair")
def bco_pair_loss(batch: PreferenceBatch, *, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BCO (Jung et al., arXiv 2404.04656) on paired data: chosen as class 1, rejected as class 0.

    ``L = −log σ(β·r_w) − log σ(−β·r_l)`` with ``r = ℓ_θ(y) − ℓ_ref(y)``. Shapes: ``[B]`` out. ``beta`` (default 0.1,
    TRL's) must be > 0.

    Paper vs code: the paper's BCO shifts every reward by a reward shift ``δ``, the running mean of the rewards
    (``−log σ(β·r_w − δ) − log σ(−(β·r_l − δ))``), and reweights unpaired data by density ratios. TRL 1.16's
    ``loss_type="bco_pair"`` uses neither: δ = 0 (earlier TRL releases kept a running mean; 1.16 has none). This
    follows TRL 1.16, so it is stateless; TRL's separate ``BCOTrainer`` is the place for the full method.
    """
    require_positive("beta", beta)
    losses = -F.logsigmoid(beta * batch.chosen_logratios) - F.logsigmoid(-beta * batch.rejected_logratios)
    return losses, {}
