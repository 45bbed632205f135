"""HAPO's token-level group-average advantage."""

from __future__ import annotations

import torch

from ..registry import require_bool, require_positive
from .registry import group_std, register_advantage_estimator


# Scale-invariant with scale_by_std (the default): the token-weighted mean and std, the GRPO fallback and the
# fallback test |A| >= threshold all see c·r as r (up to eps). Without the std division A scales by c.
@register_advantage_estimator("hapo", requires=("completion_lengths",),
                              scale_invariant=lambda hparams: hparams["scale_by_std"])
def hapo_advantages(
    rewards: torch.Tensor,
    *,
    completion_lengths: torch.Tensor,
    eps: float = 1e-6,
    scale_by_std: bool = True,
    fallback_threshold: float = 5.0,
) -> torch.Tensor:
    """HAPO token-level group-average advantage (Liu et al., arXiv 2509.16591; ``adv_estimator=hapo``).

    The group statistics count each completion once per token: ``μ = Σ_i |o_i| r_i / Σ_i |o_i|``,
    ``σ = sqrt(Σ_i |o_i| (r_i − μ)² / Σ_i |o_i|)`` (population std over the group's response tokens), and
    ``A_i = (r_i − μ) / (σ + eps)`` (``r_i − μ`` when ``scale_by_std=False``). If any ``|A_i| >= fallback_threshold``
    (default 5) in a group, that group falls back to the GRPO advantage of the official code (verl GRPO:
    Bessel-corrected std, the same ``eps``). Shapes: rewards and ``completion_lengths`` ``[num_groups, G]`` in,
    ``[num_groups, G]`` out. The other HAPO parts (entropy-aware advantage redistribution, adaptive clipping and
    temperature) are per-token and live in the trainer.

    Followed the official code (starriver030515/HAPO, ``compute_hapo_outcome_advantage``) except that its fallback test
    also looks at padding positions (value ``−μ/σ``), which can trigger the fallback spuriously; here only real
    completions are tested. A group whose lengths are all 0 uses the GRPO advantage.
    """
    require_positive("eps", eps)
    require_positive("fallback_threshold", fallback_threshold)
    require_bool("scale_by_std", scale_by_std)
    lengths = completion_lengths.to(rewards.dtype)
    if (lengths < 0).any():
        raise ValueError("`completion_lengths` must be >= 0.")
    tokens = lengths.sum(dim=1, keepdim=True)
    safe_tokens = tokens.clamp(min=1)
    mean = (lengths * rewards).sum(dim=1, keepdim=True) / safe_tokens
    std = ((lengths * (rewards - mean) ** 2).sum(dim=1, keepdim=True) / safe_tokens).sqrt()
    token_level = rewards - mean
    grpo = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_by_std:
        token_level = token_level / (std + eps)
        grpo = grpo / (group_std(rewards) + eps)
    if rewards.shape[1] == 1:
        grpo = rewards / (1.0 + eps) if scale_by_std else rewards  # verl: single-sample group has mean 0, std 1
    fallback = (token_level.abs() >= fallback_threshold).any(dim=1, keepdim=True) | (tokens == 0)
    return torch.where(fallback, grpo, token_level)
