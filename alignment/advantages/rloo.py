"""RLOO: leave-one-out baseline."""

from __future__ import annotations

import torch

from .registry import register_advantage_estimator


# Not scale-invariant: a difference of rewards, no normalisation, so A scales by c.
@register_advantage_estimator("rloo", scale_invariant=False)
def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE Leave-One-Out (Kool et al., 2019; Ahmadian et al., "Back to Basics", arXiv 2402.14740).

    ``A_i = r_i − (1/(G−1)) Σ_{j≠i} r_j``: each completion's baseline is the mean reward of the *other* completions
    of its prompt, so it does not depend on the completion itself and the gradient estimate stays unbiased.
    Equivalently ``A_i = G/(G−1) · (r_i − mean_g r)``. Shapes: ``[num_groups, G]`` in and out; no hyper-parameters.
    Needs ``G >= 2``.
    """
    group_size = rewards.shape[1]
    if group_size < 2:
        raise ValueError("advantage_estimator 'rloo' needs group_size >= 2 (a leave-one-out baseline needs a second "
                         "completion per prompt); raise num_generations.")
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (group_size - 1)
    return rewards - others_mean
