"""EXO: efficient exact optimisation of the KL-regularised objective, pairwise form (``exo_pair``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


@register_preference_loss("exo_pair")
def exo_pair_loss(
    batch: PreferenceBatch, *, beta: float = 0.1, label_smoothing: float = 1e-3
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """EXO-pref (Ji et al., ICML 2024, arXiv 2402.00856, Eq. 16 with K = 2): reverse KL to a smoothed label.

    With ``z = β·h`` (``h`` the DPO log-ratio margin) the policy's distribution over {chosen, rejected} is
    ``q = (σ(z), σ(−z))`` and the target is ``p = (1 − ε, ε)``; the loss is
    ``KL(q ‖ p) = σ(z)·[log σ(z) − log(1 − ε)] + σ(−z)·[log σ(−z) − log ε]``. Shapes: ``[B]`` out.
    ``beta`` (default 0.1) must be > 0; ``label_smoothing`` = ε (default 1e-3, the paper's recommendation quoted by
    TRL) must lie in (0, 1): ε = 0 makes ``log ε`` infinite. The minimum, 0, is at ``σ(z) = 1 − ε``, i.e.
    ``z = log((1 − ε)/ε)``: unlike DPO the margin is driven to a finite target (mode-seeking).

    Paper vs code: the paper has two temperatures, ``β_π`` for the policy and ``β_r`` for the reward model's target
    distribution; with hard binary preferences the target becomes ``(1 − ε, ε)`` and one β is left. TRL 1.16
    ``loss_type="exo_pair"`` does exactly this, and this follows it. Through `PreferenceTrainer` the recipe must
    set ``label_smoothing`` (e.g. 1e-3): TRL's ``DPOTrainer.__init__`` refuses ``exo_pair`` with the config default
    0 before training; the 1e-3 default here serves direct callers of `compute_preference_loss`.
    """
    require_positive("beta", beta)
    if not 0.0 < label_smoothing < 1.0:
        raise ValueError(f"`label_smoothing` (EXO's ε) must be in (0, 1), got {label_smoothing}; the paper "
                         "recommends 1e-3.")
    z = beta * batch.logratio_margin
    log_p_chosen, log_p_rejected = math.log1p(-label_smoothing), math.log(label_smoothing)
    losses = (torch.sigmoid(z) * (F.logsigmoid(z) - log_p_chosen)
              + torch.sigmoid(-z) * (F.logsigmoid(-z) - log_p_rejected))
    return losses, {}
