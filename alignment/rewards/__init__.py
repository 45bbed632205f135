"""Reward functions for group-relative RL, by registry name: the registry (`registry`), one reward per module.

Importing the package registers every reward; a new reward is one new module here plus its import line below.
"""

from .registry import (
    REWARDS,
    RewardFunction,
    RewardSpec,
    get_reward_function,
    get_reward_spec,
    list_rewards,
    register_reward,
    validate_reward,
)
from . import accuracy, format, math_verify, overlong  # noqa: E402,F401  (each registers its reward)
from .format import FORMAT_STYLES, has_final_answer_form
from .overlong import soft_overlong_penalty

__all__ = ["REWARDS", "RewardFunction", "RewardSpec", "get_reward_function", "get_reward_spec", "list_rewards",
           "register_reward", "validate_reward", "FORMAT_STYLES", "has_final_answer_form", "soft_overlong_penalty"]
