"""Gradient-based reward weighting (Lu et al., arXiv 2509.11452, method (b)): ``w ← softmax(log w + η·s/λ)`` with
``s_k = Σ_j ⟨g_k, g_j⟩`` the influence of objective ``k``'s policy gradient (`GradientRewardWeighting`), and the
`gradient` weighting.

The per-objective gradients themselves are taken by the trainer (`alignment.trainers.reward_weighting`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .fixed import _as_weights, _objective_names, scalarize_rewards
from .registry import REWARD_WEIGHTINGS


def objective_influence(gradients: torch.Tensor) -> torch.Tensor:
    """``s_k = Σ_j ⟨g_k, g_j⟩`` for per-objective policy gradients ``[K, P]`` → ``[K]`` (self term included).

    An objective whose gradient agrees with the others' (and is large) has high influence. Lu et al. keep the self
    term ``⟨g_k, g_k⟩`` and do not normalise the gradients (DoGE drops the self term: methods.md cross-check 7).
    """
    gradients = torch.as_tensor(gradients)
    if gradients.dim() != 2:
        raise ValueError(f"gradients must be [K objectives, P parameters], got {list(gradients.shape)}.")
    return (gradients @ gradients.T).sum(dim=1)


def gradient_weight_update(weights: Sequence[float] | torch.Tensor, influence: Sequence[float] | torch.Tensor,
                           lr: float, regularization: float = 1e-5) -> torch.Tensor:
    """Lu et al. (arXiv 2509.11452, method (b)): ``w ← softmax(log w + lr · s / λ)``.

    ``weights`` ``[K]`` (a distribution), ``influence`` ``s`` ``[K]`` (`objective_influence`), ``lr`` the actor's
    current learning rate ``η_t``, ``regularization`` ``λ`` (default 1e-5, the official ``regularization_factor``).
    Multiplicative-weights / mirror-ascent step: the result stays on the simplex; a zero weight stays zero.
    """
    weights = _as_weights(weights)
    influence = torch.as_tensor(influence, dtype=torch.float64).flatten()
    if influence.numel() != weights.numel():
        raise ValueError(f"influence has {influence.numel()} entries for {weights.numel()} weights.")
    if not regularization > 0:
        raise ValueError(f"`regularization` must be > 0, got {regularization}.")
    if not lr >= 0:
        raise ValueError(f"`lr` must be >= 0, got {lr}.")
    return torch.softmax(torch.log(weights) + lr * influence / regularization, dim=0)


class GradientRewardWeighting:
    """Gradient-based reward weighting (Lu et al., arXiv 2509.11452, method (b)), with influence accumulation.

    `accumulate(gradients)` adds ``s = objective_influence(gradients)`` (``gradients``: ``[K, P]``, each objective's
    policy gradient on the selected layers); every ``accumulation_steps`` calls, `step(lr)` applies
    `gradient_weight_update` with the mean influence and resets it. Defaults: initial weights uniform if not given,
    ``regularization=1e-5``, ``accumulation_steps=1``.

    The official code never resets its accumulator, so from the second update on it uses the running *sum* of all
    past influences divided by ``accumulation_steps``; ``reset_after_update=False`` reproduces that, the default
    follows the paper's "average over the accumulation window".
    """

    def __init__(self, weights: Sequence[float] | None = None, *, num_objectives: int | None = None,
                 regularization: float = 1e-5, accumulation_steps: int = 1, reset_after_update: bool = True,
                 names: Sequence[str] | None = None):
        if weights is None:
            if not num_objectives or num_objectives < 1:
                raise ValueError("Give initial `weights` or `num_objectives` (uniform weights).")
            weights = [1.0 / num_objectives] * num_objectives
        self._weights = _as_weights(weights)
        if not math.isclose(float(self._weights.sum()), 1.0, abs_tol=1e-3):
            raise ValueError(f"`weights` must sum to 1 (a distribution over objectives), got {self._weights.tolist()}.")
        self._weights = self._weights / self._weights.sum()
        if not regularization > 0:
            raise ValueError(f"`regularization` must be > 0, got {regularization}.")
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(f"`accumulation_steps` must be a positive int, got {accumulation_steps!r}.")
        self.regularization = regularization
        self.accumulation_steps = accumulation_steps
        self.reset_after_update = reset_after_update
        self.names = _objective_names(names, self._weights.numel())
        self._influence_sum = torch.zeros_like(self._weights)
        self._pending = 0
        self.last_influence = torch.zeros_like(self._weights)

    def accumulate(self, gradients: torch.Tensor) -> None:
        influence = objective_influence(torch.as_tensor(gradients, dtype=torch.float64))
        if influence.numel() != self._weights.numel():
            raise ValueError(f"gradients have {influence.numel()} objectives, the weights {self._weights.numel()}.")
        self._influence_sum += influence
        self._pending += 1

    def step(self, lr: float) -> bool:
        """Update the weights if ``accumulation_steps`` influences were accumulated; returns whether it did."""
        if self._pending < self.accumulation_steps:
            return False
        self.last_influence = self._influence_sum / self.accumulation_steps
        self._weights = gradient_weight_update(self._weights, self.last_influence, lr, self.regularization)
        self._pending = 0
        self._influence_sum = torch.zeros_like(self._weights) if self.reset_after_update else self.last_influence
        return True

    @property
    def weights(self) -> torch.Tensor:
        return self._weights.clone()

    def scalarize(self, rewards: torch.Tensor) -> torch.Tensor:
        return scalarize_rewards(rewards, self._weights)

    def log_dict(self) -> dict[str, float]:
        logs = {f"reward_weight/{name}": float(w) for name, w in zip(self.names, self._weights)}
        logs.update({f"reward_influence/{name}": float(s) for name, s in zip(self.names, self.last_influence)})
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self._weights.clone(), "influence_sum": self._influence_sum.clone(),
                "pending": self._pending, "last_influence": self.last_influence.clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._weights = state_dict["weights"].clone().to(torch.float64)
        self._influence_sum = state_dict["influence_sum"].clone().to(torch.float64)
        self._pending = int(state_dict["pending"])
        self.last_influence = state_dict["last_influence"].clone().to(torch.float64)


def _check_layers(*, layers: Sequence[int] | None = None, **_: Any) -> None:
    if layers is not None and (len(layers) != 2 or not all(isinstance(i, int) and i >= 0 for i in layers)
                               or layers[0] > layers[1]):
        raise ValueError(f"`reward_weighting_kwargs.layers` must be [first, last] decoder-layer indices with "
                         f"0 <= first <= last, got {layers!r}.")


@REWARD_WEIGHTINGS.register("gradient", updated_by="gradients", check=_check_layers)
def gradient(*, weights: Sequence[float], names: Sequence[str], regularization: float = 1e-5,
             accumulation_steps: int = 1, layers: Sequence[int] | None = None) -> GradientRewardWeighting:
    """Weights from the agreement of each objective's policy gradient with the others' (Lu et al., method (b)).

    ``layers``: ``[first, last]`` decoder layers whose gradients are compared (default: the middle of the stack);
    the trainer selects them (`trainers.gradients.select_gradient_parameters`), the weighting object does not need them.
    """
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"`reward_weights` {list(weights)} sum to 0; `gradient` weighting needs a distribution.")
    return GradientRewardWeighting([w / total for w in weights], names=names, regularization=regularization,
                                   accumulation_steps=accumulation_steps)
