"""Reward functions for group-relative RL, by registry name (see `alignment.rewards.registry`)."""

from .registry import *  # noqa: F401,F403
from .registry import RewardFunction, _TRL_ARGUMENTS, get_reward_function, list_rewards, register_reward  # noqa: F401
from . import math_verify  # noqa: E402,F401  (registers `math_verify_reward`)
