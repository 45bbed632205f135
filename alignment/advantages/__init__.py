"""Group-relative advantage estimators, registered by name. Import this package to register every built-in one.

Public entry point: ``compute_advantages(name, rewards, group_size, **hparams_and_inputs) -> advantages`` with
``rewards`` ``[N]`` laid out group by group and advantages ``[N]``; `get_advantage_estimator(name)` gives the spec
(``.requires``: the per-batch inputs it needs, ``.hparams``: its hyper-parameters and defaults, ``.loss_type``:
the TRL loss aggregation it needs, if any, ``.is_scale_invariant(hparams)``: whether a positive factor on every reward
leaves its advantages unchanged), `resolve_loss_type` picks / checks that aggregation, and
`validate_advantage_estimator(name, **hparams)` checks a configuration before training.
"""

from .registry import (
    ADVANTAGE_ESTIMATORS,
    ADVANTAGE_INPUTS,
    AdvantageEstimatorSpec,
    compute_advantages,
    get_advantage_estimator,
    list_advantage_estimators,
    register_advantage_estimator,
    resolve_loss_type,
    validate_advantage_estimator,
)

# Importing the modules registers their estimators.
from . import drpo, grpo, hapo, ngrpo, remax, rloo  # noqa: E402,F401  isort: skip

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "ADVANTAGE_INPUTS",
    "AdvantageEstimatorSpec",
    "compute_advantages",
    "get_advantage_estimator",
    "list_advantage_estimators",
    "register_advantage_estimator",
    "resolve_loss_type",
    "validate_advantage_estimator",
]
