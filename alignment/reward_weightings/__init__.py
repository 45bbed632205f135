"""Multi-objective reward weighting: the registry (`registry`) and one weighting per module.

Importing the package registers every weighting; a new one is one new module here plus its import line below.
The hypervolume of a point set is `alignment.reward_weightings.hypervolume.hypervolume` (not re-exported here: the
name is the module's).
"""

from .registry import REWARD_WEIGHTINGS, RewardWeightingSpec, build_reward_weighting
from . import fixed, gradient, hypervolume  # noqa: E402,F401  (each registers its weighting)
from .fixed import FixedRewardWeighting, scalarize_rewards
from .gradient import GradientRewardWeighting, gradient_weight_update, objective_influence
from .hypervolume import HypervolumeRewardWeighting, hypervolume_contribution, hypervolume_meta_reward

__all__ = ["REWARD_WEIGHTINGS", "RewardWeightingSpec", "build_reward_weighting", "FixedRewardWeighting",
           "scalarize_rewards", "GradientRewardWeighting", "gradient_weight_update", "objective_influence",
           "HypervolumeRewardWeighting", "hypervolume_contribution", "hypervolume_meta_reward"]
