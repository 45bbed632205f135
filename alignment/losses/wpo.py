"""WPO: DPO with each pair weighted by how likely the current policy is to produce it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


def wpo_mean_aligned_logp(logps: torch.Tensor, log_sum_sq_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``ā(y) = (1/|y|) Σ_t [log π(y_t) − log Σ_v π(v)²]`` over the completion tokens (``mask``), shape ``[B]``."""
    mask = mask.to(logps.dtype)
    return ((logps - log_sum_sq_probs) * mask).sum(-1) / mask.sum(-1).clamp(min=1)


@register_preference_loss("wpo", requires=("log_sum_sq_probs",))
def wpo_loss(
    batch: PreferenceBatch, *, beta: float = 0.1, clamp: bool = True
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """WPO, Weighted Preference Optimization (Zhou et al., arXiv 2406.11827), as in the official code.

    ``ā(y) = (1/|y|) Σ_t [log π_θ(y_t|·) − log Σ_v π_θ(v|·)²]`` with the **current policy**, no gradient (the
    "sampled alignment" normaliser: an on-policy sample gets weight ≈ 1); pair weight
    ``w = min(1, exp(ā(y_w) + ā(y_l)))`` and ``L = w · (−log σ(βh))``. Shapes: ``[B]`` out.

    ``clamp=False`` drops the ``min(1, ·)``, which reproduces current TRL ``DPOTrainer(use_weighting=True)`` exactly
    (TRL does not clamp; the official code and older TRL do). ``beta`` defaults to 0.1 like every loss here; the paper
    (official ``llama3_instruct.yaml``, TRL paper index) used ``beta=0.01`` — set it in the recipe.
    ``|y|`` counts completion tokens (the mask; per-token weights, if any, are not applied to ``ā``).
    Needs the per-token ``log_sum_sq_probs`` of the policy (``requires=("log_sum_sq_probs",)``); the trainer requests
    it from the fused LM head. Label smoothing is not offered (0 in the official default).

    Metrics: ``wpo/weight`` per example.
    """
    require_positive("beta", beta)
    with torch.no_grad():
        chosen = wpo_mean_aligned_logp(batch.chosen_logps.detach(), batch.chosen_log_sum_sq_probs.detach(),
                                       batch.chosen_mask)
        rejected = wpo_mean_aligned_logp(batch.rejected_logps.detach(), batch.rejected_log_sum_sq_probs.detach(),
                                         batch.rejected_mask)
        weight = torch.exp(chosen + rejected)
        if clamp:
            weight = weight.clamp(max=1.0)
    losses = weight * -F.logsigmoid(beta * batch.logratio_margin)
    return losses, {"wpo/weight": weight}
