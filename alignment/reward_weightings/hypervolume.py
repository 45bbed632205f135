"""Hypervolume-guided reward weighting (Lu et al., arXiv 2509.11452, method (a)): the hypervolume math and the
`hypervolume` weighting.

A meta-reward ``m = 0.5 + 1.5·tanh(max(ΔHV, 0))`` from the hypervolume contribution of the latest validation scores
multiplies the weighted reward (`HypervolumeRewardWeighting`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .fixed import _as_weights, _objective_names, scalarize_rewards
from .registry import REWARD_WEIGHTINGS


def _to_maximization(points: torch.Tensor, maximize: Sequence[bool]) -> torch.Tensor:
    signs = torch.tensor([1.0 if m else -1.0 for m in maximize], dtype=points.dtype)
    return points * signs


def hypervolume(points: torch.Tensor, reference: torch.Tensor, maximize: Sequence[bool] | None = None) -> float:
    """Hypervolume dominated by ``points`` ``[n, K]`` relative to ``reference`` ``[K]``.

    The Lebesgue measure of ``∪_p [ref, p]`` (each objective maximised, or minimised where ``maximize[k]`` is False).
    A point no better than the reference in some objective dominates nothing. Exact, by cutting space into the grid
    of all point coordinates: ``(n+1)^K`` cells, fine for the small Pareto buffers this is used with.
    """
    points = torch.as_tensor(points, dtype=torch.float64)
    reference = torch.as_tensor(reference, dtype=torch.float64).flatten()
    if points.numel() == 0:
        return 0.0
    points = points.reshape(-1, reference.numel())
    maximize = [True] * reference.numel() if maximize is None else list(maximize)
    if len(maximize) != reference.numel():
        raise ValueError(f"`maximize` has {len(maximize)} entries for {reference.numel()} objectives.")
    points = _to_maximization(points, maximize)
    reference = _to_maximization(reference.unsqueeze(0), maximize)[0]
    points = torch.maximum(points, reference)  # a worse coordinate adds no volume
    # Per objective, the sorted cut positions; a cell [c_i, c_{i+1}] is covered if some point reaches c_{i+1}.
    cuts = [torch.unique(torch.cat([reference[k:k + 1], points[:, k]])) for k in range(reference.numel())]
    uppers = torch.cartesian_prod(*(c[1:] for c in cuts)).reshape(-1, reference.numel())
    widths = torch.cartesian_prod(*(c[1:] - c[:-1] for c in cuts)).reshape(-1, reference.numel())
    covered = (points.unsqueeze(0) >= uppers.unsqueeze(1)).all(dim=2).any(dim=1)
    return float((widths.prod(dim=1) * covered).sum())


def hypervolume_contribution(buffer: Sequence[Sequence[float]], point: Sequence[float],
                             maximize: Sequence[bool] | None = None) -> float:
    """``ΔHV = HV(buffer[1:] ∪ {point}) − HV(buffer[1:])`` with ``buffer[0]`` the reference point (Lu et al.)."""
    if len(buffer) == 0:
        raise ValueError("`buffer` must hold at least the reference point (its first entry).")
    reference = torch.as_tensor(buffer[0], dtype=torch.float64)
    front = torch.as_tensor(list(buffer[1:]), dtype=torch.float64).reshape(-1, reference.numel())
    point = torch.as_tensor(point, dtype=torch.float64).reshape(1, -1)
    if point.shape[1] != reference.numel():
        raise ValueError(f"point has {point.shape[1]} objectives, the reference {reference.numel()}.")
    return hypervolume(torch.cat([front, point]), reference, maximize) - hypervolume(front, reference, maximize)


def hypervolume_meta_reward(contribution: float) -> float:
    """Lu et al. (arXiv 2509.11452): ``m = 0.5 + 1.5·tanh(max(ΔHV, 0))``, in ``[0.5, 2)``; multiplies the reward."""
    return 0.5 + 1.5 * math.tanh(max(contribution, 0.0))


class HypervolumeRewardWeighting:
    """Hypervolume-guided reward weighting (Lu et al., arXiv 2509.11452, method (a)).

    Keeps a buffer whose first entry is the reference point (the validation scores before training) and whose others
    are the validation score vectors that enlarged the Pareto front (without ``reference_point``, the first validation's
    scores become the reference). After each validation, `update(scores)` computes
    the contribution ``ΔHV`` of the new scores, sets the meta-reward ``m = 0.5 + 1.5·tanh(max(ΔHV, 0))`` and adds the
    scores to the buffer if ``ΔHV > 0``. Training rewards are then ``m · Σ_k w_k r_k`` (`scalarize`); `weights` is
    ``m · w``. Before the first update ``m = 1``, as in the official code.
    """

    def __init__(self, weights: Sequence[float], reference_point: Sequence[float] | None = None,
                 maximize: Sequence[bool] | None = None, names: Sequence[str] | None = None):
        self.base_weights = _as_weights(weights)
        count = self.base_weights.numel()
        self.names = _objective_names(names, count)
        self.maximize = [True] * count if maximize is None else [bool(m) for m in maximize]
        if len(self.maximize) != count:
            raise ValueError(f"`maximize` has {len(self.maximize)} entries for {count} objectives.")
        # Without a reference point, the first validation's scores become it (and leave m = 1).
        self.buffer: list[list[float]] = []
        if reference_point is not None:
            self.buffer.append(self._checked(reference_point, "reference_point"))
        self.meta_reward = 1.0
        self.last_contribution = 0.0

    def _checked(self, values: Sequence[float], name: str) -> list[float]:
        values = [float(x) for x in values]
        if len(values) != self.base_weights.numel() or not all(math.isfinite(x) for x in values):
            raise ValueError(f"`{name}` must hold {self.base_weights.numel()} finite numbers (one per objective), "
                             f"got {values}.")
        return values

    def update(self, scores: Sequence[float]) -> float:
        """Feed the latest validation scores (one per objective); returns the new meta-reward."""
        scores = self._checked(scores, "scores")
        if not self.buffer:
            self.buffer.append(scores)
            return self.meta_reward
        self.last_contribution = hypervolume_contribution(self.buffer, scores, self.maximize)
        self.meta_reward = hypervolume_meta_reward(self.last_contribution)
        if self.last_contribution > 0:
            self.buffer.append(scores)
        return self.meta_reward

    @property
    def weights(self) -> torch.Tensor:
        return self.meta_reward * self.base_weights

    def scalarize(self, rewards: torch.Tensor) -> torch.Tensor:
        return scalarize_rewards(rewards, self.weights)

    def log_dict(self) -> dict[str, float]:
        logs = {f"reward_weight/{name}": float(w) for name, w in zip(self.names, self.weights)}
        logs.update({"reward_weight/meta_reward": self.meta_reward,
                     "reward_weight/hv_contribution": self.last_contribution})
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": [list(p) for p in self.buffer], "meta_reward": self.meta_reward,
                "last_contribution": self.last_contribution}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.buffer = [list(p) for p in state_dict["buffer"]]
        self.meta_reward = float(state_dict["meta_reward"])
        self.last_contribution = float(state_dict.get("last_contribution", 0.0))


@REWARD_WEIGHTINGS.register("hypervolume", updated_by="evaluation")
def hypervolume_weighting(*, weights: Sequence[float], names: Sequence[str],
                          reference_point: Sequence[float] | None = None,
                          maximize: Sequence[bool] | None = None) -> HypervolumeRewardWeighting:
    """Meta-reward from the hypervolume contribution of each evaluation's mean rewards (Lu et al., method (a))."""
    return HypervolumeRewardWeighting(weights, reference_point=reference_point, maximize=maximize, names=names)
