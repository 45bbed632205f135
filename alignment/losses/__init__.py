"""Preference losses, registered by name. Import this package to register every built-in loss.

Public entry points: `compute_preference_loss(name, batch, *, state=None, **hparams) -> (per_example_loss, metrics)`,
`PreferenceBatch`, and `LossState` (the running state of stateful losses such as `beta_dpo`).
"""

from .batch import PreferenceBatch
from .registry import (
    LossState,
    PreferenceLossSpec,
    compute_preference_loss,
    get_preference_loss,
    list_preference_losses,
    register_preference_loss,
    validate_preference_loss,
)

# Importing the modules registers their losses.
from . import beta_dpo, discopop, dpo, madpo, margin_losses, nll_regularized, npo, wpo  # noqa: E402,F401  isort: skip

__all__ = [
    "LossState",
    "PreferenceBatch",
    "PreferenceLossSpec",
    "compute_preference_loss",
    "get_preference_loss",
    "list_preference_losses",
    "register_preference_loss",
    "validate_preference_loss",
]
