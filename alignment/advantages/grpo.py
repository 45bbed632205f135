"""GRPO and Dr. GRPO: group-mean baseline, with and without the group-std division."""

from __future__ import annotations

import torch

from ..registry import require_choice, require_positive
from .registry import group_std, register_advantage_estimator

SCALE_REWARDS = ("group", "batch", "none")


# Scale-invariant unless scale_rewards is "none": with c·r both the centred rewards and the (group or batch) std
# scale by c, so A is unchanged up to eps (whose share shrinks as c grows); without the division A scales by c.
@register_advantage_estimator("grpo", scale_invariant=lambda hparams: hparams["scale_rewards"] != "none")
def grpo_advantages(rewards: torch.Tensor, *, scale_rewards: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """GRPO (Shao et al., DeepSeekMath, arXiv 2402.03300): group-normalised outcome reward.

    ``A_i = (r_i − mean_g r) / (std_g r + eps)`` for the ``G`` completions of one prompt (group ``g``). Shapes:
    rewards ``[num_groups, G]`` in, advantages ``[num_groups, G]`` out.

    ``scale_rewards`` (default ``"group"``), as TRL's ``GRPOConfig.scale_rewards``:
    ``"group"`` divides by the group's std, ``"batch"`` by the std of all rewards in the batch (PPO-Lite; the mean
    stays per group), ``"none"`` does not divide (= ``dr_grpo``). The std is Bessel-corrected (``torch.std``, as
    TRL's ``nanstd``); ``eps`` (default 1e-4, TRL's; verl uses 1e-6) keeps zero-variance groups finite, so an
    all-equal group (all wrong or all right) gets advantage 0. A single-completion group has std 0 and advantage 0,
    as in TRL (verl instead uses mean 0 / std 1 there).
    """
    require_choice("scale_rewards", scale_rewards, SCALE_REWARDS)
    require_positive("eps", eps)
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_rewards == "none":
        return centred
    if scale_rewards == "group":
        std = group_std(rewards)
    else:
        std = rewards.std() if rewards.numel() > 1 else torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    return centred / (std + eps)


# Not scale-invariant: A = r − mean_g r scales by c (the std division it drops is what made GRPO invariant).
@register_advantage_estimator("dr_grpo", scale_invariant=False)
def dr_grpo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Dr. GRPO (Liu et al., "Understanding R1-Zero-Like Training", arXiv 2503.20783): no std division.

    ``A_i = r_i − mean_g r`` (``[num_groups, G]`` in and out; no hyper-parameters). Dividing by the group std
    up-weights prompts whose rewards barely vary (too easy or too hard), the "question-level difficulty bias" the
    paper removes. The paper's other change, a constant loss normaliser instead of ``1/|o_i|``, is a loss
    aggregation (TRL ``loss_type="dr_grpo"``), not an advantage. Equals ``grpo`` with ``scale_rewards="none"``.
    """
    return rewards - rewards.mean(dim=1, keepdim=True)
