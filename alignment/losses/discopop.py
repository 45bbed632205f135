"""DiscoPOP: the discovered log-ratio-modulated preference loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


@register_preference_loss("discopop")
def discopop_loss(
    batch: PreferenceBatch, *, beta: float = 0.05, discopop_tau: float = 0.05
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DiscoPOP / LRML, log-ratio modulated loss (Lu et al., Sakana AI, NeurIPS 2024, arXiv 2406.08414).

    With ``x = β·h``: mixing weight ``q = σ(x / τ)`` and ``L = (1 − q)·(−log σ(x)) + q·exp(−x)`` — a blend of the
    logistic (DPO) and exponential losses, leaning to the exponential one as the margin grows. Shapes: ``[B]`` out.
    ``q`` is not detached (as in TRL and the official code). Defaults: ``beta=0.05``, ``discopop_tau=0.05`` (the
    paper's setting); both must be > 0. Equal to TRL's ``loss_type="discopop"``.

    The function default ``beta=0.05`` applies only when the loss is called without ``beta``; the trainer passes the
    recipe's ``beta`` to every loss that takes one, so a DiscoPOP recipe should set ``beta: 0.05`` explicitly (TRL's
    global default is 0.1).

    Paper vs code: the official model-card code uses the unscaled ``σ(h)`` as the mixing weight; that equals
    ``σ(βh/τ)`` only when β = τ (true for the published 0.05/0.05). This follows TRL and the paper, ``σ(βh/τ)``.

    Numerics: ``q·exp(−x)`` is evaluated as ``exp(log σ(x/τ) − x)``, identical in exact arithmetic to TRL's product but
    finite for very negative margins where TRL's ``σ(x/τ)·exp(−x)`` becomes ``0·inf = nan`` (for τ < 1).

    Not monotone in ``h``: ``q`` is not detached, and its derivative term ``q(1−q)/τ·(e^{−x} + log σ(x)) ≥ 0`` peaks
    at ``x = 0``. For small τ it outweighs the rest, so near ``h = 0`` the gradient *lowers* the margin (at the
    published β = τ = 0.05, ``dL/dx`` > 0 for roughly ``−0.12 < βh < 0.07``, i.e. ``−2.4 < h < 1.4``, including
    ``h = 0`` where policy = reference). Outside that band chosen is pushed up and rejected down as in DPO. This is the formula as
    published and as in TRL; it is kept unchanged (tests pin it).

    Metric ``discopop/mix_weight``: ``q`` per example.
    """
    require_positive("beta", beta)
    require_positive("discopop_tau", discopop_tau)
    logits = beta * batch.logratio_margin
    q = torch.sigmoid(logits / discopop_tau)
    logistic_component = -F.logsigmoid(logits)
    weighted_exp_component = torch.exp(F.logsigmoid(logits / discopop_tau) - logits)
    losses = (1.0 - q) * logistic_component + weighted_exp_component
    return losses, {"discopop/mix_weight": q.detach()}
