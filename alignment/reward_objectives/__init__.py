"""Domain-invariance objectives for Bradley-Terry reward models (`reward_invariance` in a reward recipe): the
registry (`registry.py`) and one file per objective."""

from .registry import (
    REWARD_INVARIANCE,
    invariance_penalty,
    per_domain_bt_risks,
    risk_variance,
    validate_reward_invariance,
    vrex,
)

__all__ = ["REWARD_INVARIANCE", "per_domain_bt_risks", "risk_variance", "vrex", "validate_reward_invariance",
           "invariance_penalty"]
