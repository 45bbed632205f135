"""Preference losses, registered by name. Import this package to register every built-in loss.

Public entry points: `compute_preference_loss(name, batch, **hparams) -> (per_example_loss, metrics)` and
`PreferenceBatch`.
"""

from .batch import PreferenceBatch
from .registry import (
    PreferenceLossSpec,
    compute_preference_loss,
    get_preference_loss,
    list_preference_losses,
    register_preference_loss,
    validate_preference_loss,
)

# Importing the modules registers their losses.
from . import discopop, dpo, madpo, margin_losses, npo  # noqa: E402,F401  isort: skip

__all__ = [
    "PreferenceBatch",
    "PreferenceLossSpec",
    "compute_preference_loss",
    "get_preference_loss",
    "list_preference_losses",
    "register_preference_loss",
    "validate_preference_loss",
]
