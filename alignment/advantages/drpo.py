"""DRPO: decoupled length-preferring weights on correct completions, soft-max weights on wrong ones."""

from __future__ import annotations

import torch

from ..registry import require_positive
from .registry import register_advantage_estimator


# Only the per-sequence token mean reproduces DRPO's per-token gradient (see the docstring).
# Scale-invariant: the rewards enter only through which completions are correct (r >= correct_threshold); the
# weights come from lengths and log-probs, so a reward's size never reaches A. A factor c can only move a reward across
# the threshold (exactly invariant at correct_threshold 0; with 0/1 rewards, for every c >= correct_threshold), which
# re-labels completions rather than weighting them.
@register_advantage_estimator("drpo", requires=("completion_lengths", "max_completion_length"), loss_type="grpo",
                              scale_invariant=True)
def drpo_advantages(
    rewards: torch.Tensor,
    *,
    completion_lengths: torch.Tensor,
    max_completion_length: int,
    completion_mean_logps: torch.Tensor | None = None,
    length_lambda: float = 0.1,
    tau: float = 10.0,
    correct_threshold: float = 0.5,
) -> torch.Tensor:
    """DRPO (Li, Chen, Lin, Yang, ICLR 2026, arXiv 2510.04474) as per-completion advantages.

    DRPO maximises, per prompt with both correct (``pos``) and wrong (``neg``) completions,
    ``J = Σ_{i∈pos} ŵ_i s_i − τ log Σ_{j∈neg} exp(s_j/τ)``, with ``s_i = (1/|o_i|) Σ_t log π_θ(o_{i,t})`` and the
    length preference computed **among the correct completions only** (so a short correct answer is never pushed
    below a wrong one, the "decoupling"): ``ŵ_i = softmax_{i∈pos}((1 − |o_i|/L_max) / λ)``. The loss is
    ``−(1/#prompts) Σ J`` (all prompts counted, mixed or not) plus a KL trust-region term.

    Mapping onto advantages: ``∂J/∂s_i = ŵ_i`` for ``i ∈ pos`` and ``∂J/∂s_j = −softmax_{j∈neg}(s_j/τ)`` for
    ``j ∈ neg``. With a loss that averages each completion's tokens and then the ``N = #prompts · G`` completions
    (TRL ``loss_type="grpo"``), the gradient at ratio 1 is ``(1/N) Σ_i A_i ∇s_i``, so returning
    ``A_i = G · ∂J/∂s_i`` reproduces DRPO's per-token gradient ``−(1/#prompts) · ∂J/∂s_i / |o_i|`` exactly. Any
    other aggregation does not: TRL's default ``dapo`` (token sum over the batch) weights completion ``i``'s gradient
    by ``|o_i|``, against DRPO's length control. So the estimator is registered with ``loss_type="grpo"``:
    `GroupRLConfig` picks it when ``loss_type`` is unset and an explicit other choice is an error at start-up.
    Groups that are all-correct or all-wrong get 0 (the paper drops them; they still count in the ``1/#prompts``
    normaliser, as here). Correct means
    ``reward >= correct_threshold`` (default 0.5; the official code uses ``reward == 1`` / ``reward == 0``, the same
    on 0/1 rewards).

    Paper/code vs here: (1) the negative weights need the completions' current scores ``s_j``. `GroupRLTrainer`
    passes ``completion_mean_logps`` ``[N]``: the mean token log-probs of the policy that sampled the batch, equal
    to the current ones on the first (with TRL's defaults the only) update of a batch; the official code recomputes
    them at every update of later mini-batches. Called without them the weights are uniform ``1/|neg|``, the
    ``τ → ∞`` limit. (2) DRPO's squared-hinge KL trust region ``sg[β·max(KL − δ, 0)]·KL`` replaces PPO clipping in
    the paper; it is not an advantage, so the trainer's own clipping / KL settings apply instead (at ratio 1, on
    the first update, neither changes the gradient: the official constraint is 0 there too).

    Shapes: rewards, ``completion_lengths`` ``[num_groups, G]``; ``max_completion_length`` int (``L_max``, lengths
    must not exceed it); advantages ``[num_groups, G]``. Defaults (official script): ``length_lambda`` λ = 0.1,
    ``tau`` τ = 10.
    """
    require_positive("length_lambda", length_lambda)
    require_positive("tau", tau)
    if isinstance(correct_threshold, bool) or not isinstance(correct_threshold, (int, float)):
        raise ValueError(f"`correct_threshold` must be a number, got {correct_threshold!r}.")
    lengths = completion_lengths.to(rewards.dtype)
    if (lengths < 0).any() or (lengths > max_completion_length).any():
        raise ValueError(f"`completion_lengths` must lie in [0, max_completion_length={max_completion_length}], "
                         f"got min {lengths.min().item()}, max {lengths.max().item()}.")
    group_size = rewards.shape[1]
    pos = rewards >= correct_threshold
    neg = ~pos
    mixed = (pos.any(dim=1) & neg.any(dim=1)).unsqueeze(1)

    length_scores = (1.0 - lengths / max_completion_length) / length_lambda
    pos_weights = torch.softmax(length_scores.masked_fill(~pos, float("-inf")), dim=1)
    if completion_mean_logps is None:
        neg_scores = torch.zeros_like(rewards)
    else:
        neg_scores = completion_mean_logps.to(rewards.dtype) / tau
    neg_weights = torch.softmax(neg_scores.masked_fill(~neg, float("-inf")), dim=1)
    # Rows without positives (or negatives) are NaN after the masked softmax; `mixed` zeroes them.
    advantages = torch.where(pos, pos_weights, -neg_weights) * group_size
    return torch.where(mixed, advantages, torch.zeros_like(advantages))
