"""The reward-weighting registry: how the weights ``w`` of ``r = Σ_k w_k r_k`` over a run's K rewards evolve.

A recipe picks one with ``reward_weighting: <name>`` and sets its hyper-parameters in ``reward_weighting_kwargs``.
An entry is a builder::

    @REWARD_WEIGHTINGS.register("name", updated_by="evaluation")
    def name(*, weights, names, my_hparam: float = 1.0) -> MyWeighting: ...

``weights`` (TRL's ``reward_weights``, [K]) and ``names`` (the rewards' names) are what the trainer passes; the
other keyword-only parameters are the hyper-parameters. The object returned has ``weights``, ``scalarize``,
``log_dict``, ``state_dict`` / ``load_state_dict`` (see `alignment.reward_weightings.fixed`), plus ``update(scores)``
when ``updated_by="evaluation"`` or ``accumulate(gradients)`` / ``step(lr)`` when ``updated_by="gradients"``.
Weightings of Lu et al. (arXiv 2509.11452): `fixed`, `hypervolume` (method (a)), `gradient` (method (b)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..registry import Registry, Spec, require_bool, require_choice

UPDATED_BY = (None, "evaluation", "gradients")


@dataclass(frozen=True)
class RewardWeightingSpec(Spec):
    """A weighting's declared properties, which the trainer reads instead of comparing names."""

    multi_objective: bool = True  # balances several rewards: a run needs at least two
    updated_by: str | None = None  # what moves the weights: nothing, each evaluation's mean rewards, or gradients
    # validates hyper-parameter values (called with all of them, defaults filled)
    check: Callable[..., None] | None = None

    def __post_init__(self) -> None:
        require_bool("multi_objective", self.multi_objective)
        require_choice("updated_by", self.updated_by, UPDATED_BY)


def _check_values(spec: RewardWeightingSpec, hparams: dict[str, Any]) -> None:
    if spec.check is not None:
        spec.check(**{**spec.hparams, **hparams})


REWARD_WEIGHTINGS: Registry[RewardWeightingSpec] = Registry(
    "reward_weighting", RewardWeightingSpec, inputs=("weights", "names"), validator=_check_values)


def build_reward_weighting(name: str, weights: list[float], names: list[str], **hparams: Any):
    """The weighting object of entry ``name`` for rewards ``names`` with initial ``weights``."""
    return REWARD_WEIGHTINGS.get(name).fn(weights=weights, names=names, **hparams)
