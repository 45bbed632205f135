"""Linear scalarisation of several rewards, ``r = Σ_k w_k r_k``, with fixed weights (the `fixed` weighting).

`scalarize_rewards` and the weight/name checks here are shared by the dynamic weightings (`hypervolume`,
`gradient`), which keep the same interface as `FixedRewardWeighting`: ``weights``, ``scalarize``, ``log_dict``,
``state_dict`` / ``load_state_dict``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .registry import REWARD_WEIGHTINGS


def _as_weights(weights: Sequence[float] | torch.Tensor, *, name: str = "weights") -> torch.Tensor:
    weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if weights.numel() == 0 or not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"`{name}` must be a non-empty list of finite non-negative numbers, got {weights.tolist()}.")
    return weights


def scalarize_rewards(rewards: torch.Tensor, weights: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Linear scalarisation ``r = Σ_k w_k r_k``: rewards ``[N, K]`` (one column per objective), weights ``[K]`` → ``[N]``."""
    rewards = torch.as_tensor(rewards)
    weights = _as_weights(weights)
    if rewards.dim() != 2 or rewards.shape[1] != weights.numel():
        raise ValueError(f"rewards must be [N, K={weights.numel()}] (one column per weight), "
                         f"got {list(rewards.shape)}.")
    return rewards @ weights.to(rewards.dtype if rewards.is_floating_point() else torch.float64)


class FixedRewardWeighting:
    """Fixed weights for linear scalarisation; the same interface as the dynamic weightings."""

    def __init__(self, weights: Sequence[float], names: Sequence[str] | None = None):
        self.base_weights = _as_weights(weights)
        self.names = _objective_names(names, self.base_weights.numel())

    @property
    def weights(self) -> torch.Tensor:
        return self.base_weights.clone()

    def scalarize(self, rewards: torch.Tensor) -> torch.Tensor:
        return scalarize_rewards(rewards, self.weights)

    def log_dict(self) -> dict[str, float]:
        """``{"reward_weight/<objective>": weight}`` for the trainer's logs."""
        return {f"reward_weight/{name}": float(w) for name, w in zip(self.names, self.weights)}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


def _objective_names(names: Sequence[str] | None, count: int) -> list[str]:
    names = list(names) if names is not None else [f"objective_{k}" for k in range(count)]
    if len(names) != count:
        raise ValueError(f"Got {len(names)} objective names for {count} weights.")
    return names


@REWARD_WEIGHTINGS.register("fixed", multi_objective=False)
def fixed(*, weights: Sequence[float], names: Sequence[str]) -> FixedRewardWeighting:
    """TRL's `reward_weights`, constant."""
    return FixedRewardWeighting(weights, names=names)
