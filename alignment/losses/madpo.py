"""MADPO: margin-adaptive instance weights on the DPO loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


def madpo_weight(
    margin: torch.Tensor, *, c_max: float = 2.0, c_min: float = 0.5, lam: float = 1.0, tau: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MADPO multiplier ``c(|m|)`` and instance weight ``w(m)`` for reward margins ``m`` (any shape).

    ``c(|m|) = c_min + (c_max − c_min) / (1 + K·exp(λ(|m| − τ)))`` with ``K = (c_max − 1)/(1 − c_min)`` (so
    ``c(τ) = 1``); ``w = σ(c·m)/σ(m)`` where ``m > −τ``, else ``1``. The ratio is computed in log space.
    """
    k = (c_max - 1.0) / (1.0 - c_min)
    coef = c_min + (c_max - c_min) / (1.0 + k * torch.exp(lam * (margin.abs() - tau)))
    ratio = torch.exp(F.logsigmoid(coef * margin) - F.logsigmoid(margin))
    weight = torch.where(margin > -tau, ratio, torch.ones_like(ratio))
    return coef, weight


@register_preference_loss("madpo", requires=("margin",))
def madpo_loss(
    batch: PreferenceBatch,
    *,
    beta: float = 0.1,
    c_max: float = 2.0,
    c_min: float = 0.5,
    lam: float = 1.0,
    tau: float = 2.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MADPO, Margin-Adaptive DPO (Rho, arXiv 2510.05342): DPO reweighted per pair by a reward-model margin.

    ``m`` = ``batch.margin`` ``[B]``, the reward-model score margin ``r_φ(x,y_w) − r_φ(x,y_l)`` oriented toward the
    labelled winner (negative when the RM disagrees with the label). Then
    ``c(|m|) = c_min + (c_max − c_min) / (1 + K·exp(λ(|m| − τ)))``, ``K = (c_max − 1)/(1 − c_min)`` (``c(τ) = 1``;
    ``c > 1`` for ``|m| < τ``, ``c → c_min`` for ``|m| ≫ τ``),
    ``w = σ(c·m)/σ(m)`` if ``m > −τ`` else ``1``, and ``L = sg[w] · (−log σ(βh))``. Shapes: ``[B]`` out.
    So ``w > 1`` for hard confident pairs ``0 < m < τ``, ``w < 1`` for easy pairs ``m > τ`` and for mildly disputed
    labels ``−τ < m < 0``, ``w = 1`` at ``m ∈ {0, τ}`` and for ``m ≤ −τ``.

    Defaults are the official code's class defaults (``MADPOLoss``): ``beta=0.1``, ``c_max=2``, ``c_min=0.5``,
    ``lam=1`` (λ), ``tau=2``. The paper's experiments use ``tau = ln(0.999/0.001) ≈ 6.91`` (ablations ``c2_t7``,
    ``c4_t7``), with ``c_min = 1/c_max``; set ``tau: 6.91`` in a recipe to reproduce them. Constraints:
    ``beta > 0``, ``c_max > 1``, ``0 < c_min < 1``, ``lam > 0``, ``tau > 0``.

    Paper/code agreement: the official code computes the same weight (as a 2-way cross-entropy over
    ``[β·logratio(y1), β·logratio(y2)]``, identical to ``−log σ(βh)``); its weight is a function of data only, and here
    it is explicitly detached. The batch mean is the caller's (the official code divides by ``B``, not by ``Σw``).
    The margin must be supplied as a dataset column (``requires=("margin",)``), e.g. from
    ``scripts/annotate_margins.py``.

    Metrics: ``madpo/weight`` (``w``) and ``madpo/coef`` (``c(|m|)``) per example.
    """
    require_positive("beta", beta)
    if not c_max > 1:
        raise ValueError(f"`c_max` must be > 1 (c(|m|) must exceed 1 for low-margin pairs), got {c_max}.")
    if not 0 < c_min < 1:
        raise ValueError(f"`c_min` must be in (0, 1) (c(|m|) must fall below 1 for high-margin pairs), got {c_min}.")
    require_positive("lam", lam)
    require_positive("tau", tau)
    h = batch.logratio_margin
    margin = batch.margin.detach().to(h.dtype)
    coef, weight = madpo_weight(margin, c_max=c_max, c_min=c_min, lam=lam, tau=tau)
    weight = weight.detach()
    losses = weight * -F.logsigmoid(beta * h)
    return losses, {"madpo/weight": weight, "madpo/coef": coef.detach()}
