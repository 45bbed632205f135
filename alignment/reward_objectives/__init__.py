"""Domain-invariance objectives for Bradley-Terry reward models (`reward_invariance` in a reward recipe): the
registry (`registry.py`) and one file per objective (`vrex`: all domains labelled; `dial`: labelled source domains,
unlabelled target domains, a Wasserstein critic)."""

from .registry import (
    REWARD_INVARIANCE,
    RewardObjectiveSpec,
    invariance_penalty,
    pairwise_bt_losses,
    per_domain_bt_risks,
    validate_reward_invariance,
)
from .vrex import risk_variance, vrex
from .dial import (
    build_critic,
    critic_objective,
    dial,
    gradient_penalty,
    scored_embeddings,
    scored_positions,
    wasserstein_estimate,
)

__all__ = ["REWARD_INVARIANCE", "RewardObjectiveSpec", "pairwise_bt_losses",
           "per_domain_bt_risks", "risk_variance", "vrex",
           "validate_reward_invariance", "invariance_penalty", "dial", "build_critic", "critic_objective",
           "gradient_penalty", "wasserstein_estimate", "scored_positions", "scored_embeddings"]
