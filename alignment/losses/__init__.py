"""Preference losses, registered by name. Import this package to register every built-in loss.

Public entry points: `compute_preference_loss(name, batch, *, state=None, **hparams) -> (per_example_loss, metrics)`,
`PreferenceBatch`, `LossState` (the running state of stateful losses such as `beta_dpo`), `preference_columns()`
(the per-example dataset columns a loss may read) and `register_preference_column` (declares a new one). Token
weightings (`alignment.token_weightings`: `tldr`, `entropy`) give the batch per-token weights that compose with any
of these losses; their entry points are re-exported here for the callers that import them from this package.
"""

from .batch import PreferenceBatch
from .registry import (
    EXTRAS,
    PREFERENCE_LOSSES,
    LossState,
    PreferenceLossSpec,
    compute_preference_loss,
    get_preference_loss,
    list_preference_losses,
    preference_columns,
    register_preference_column,
    register_preference_loss,
    unregister_preference_column,
    validate_preference_loss,
)

# Importing the modules registers their losses.
from . import beta_dpo, discopop, dpo, madpo, margin_losses, nll_regularized, npo, wpo  # noqa: E402,F401  isort: skip
from . import sparsepo  # noqa: E402,F401  isort: skip
from . import aft, bvpo, dmpo, irepo, rdpo, typo  # noqa: E402,F401  isort: skip
from . import aot, apo, bco, exo, nca, sppo  # noqa: E402,F401  isort: skip
from . import reference_free  # noqa: E402,F401  isort: skip
from . import inpo  # noqa: E402,F401  isort: skip

__all__ = [
    "EXTRAS",
    "PREFERENCE_LOSSES",
    "LossState",
    "PreferenceBatch",
    "PreferenceLossSpec",
    "compute_preference_loss",
    "get_preference_loss",
    "list_preference_losses",
    "preference_columns",
    "register_preference_column",
    "register_preference_loss",
    "unregister_preference_column",
    "validate_preference_loss",
]
