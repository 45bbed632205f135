"""ReMax: greedy-rollout baseline."""

from __future__ import annotations

import torch

from .registry import register_advantage_estimator


# Not scale-invariant: the greedy baseline is a reward too, so A = c·r − c·r(ȳ) scales by c.
@register_advantage_estimator("remax", requires=("baseline_rewards",), scale_invariant=False)
def remax_advantages(rewards: torch.Tensor, *, baseline_rewards: torch.Tensor) -> torch.Tensor:
    """ReMax (Li et al., ICML 2024, arXiv 2310.10505): REINFORCE with the greedy completion's reward as baseline.

    ``A_i = r(x, y_i) − r(x, ȳ)`` where ``ȳ`` is the greedy-decoded completion of the same prompt. Shapes: rewards
    ``[num_groups, G]``, ``baseline_rewards`` ``[num_groups]`` (one greedy rollout per prompt), advantages
    ``[num_groups, G]``. The paper samples one completion per prompt (``G = 1``); with ``G > 1`` every sample shares
    its prompt's greedy baseline. No std normalisation, no hyper-parameters.

    The paper's per-token advantage is the reward-to-go ``G_t − r(x, ȳ)``; for an outcome reward that is the same
    scalar at every token, which is what this returns. A per-token KL penalty, if any, is the trainer's loss term.
    """
    return rewards - baseline_rewards.to(rewards.dtype).unsqueeze(1)
