"""Token weightings, registered by name: per-token weights that compose with every preference loss.

Public entry points: `compute_token_weights(name, logps, mask, *, entropy=None, **hparams) -> [B, T] weights`,
`validate_token_weighting(name, **hparams)` (start-up check), `get_token_weighting` / `list_token_weightings`.
"""

from .registry import (
    TOKEN_WEIGHTINGS,
    TokenWeightingSpec,
    check_token_weighting_hparams,
    compute_token_weights,
    get_token_weighting,
    list_token_weightings,
    register_token_weighting,
    validate_token_weighting,
)

# Importing the modules registers their weightings.
from . import entropy, tldr  # noqa: E402,F401  isort: skip

__all__ = [
    "TOKEN_WEIGHTINGS",
    "TokenWeightingSpec",
    "check_token_weighting_hparams",
    "compute_token_weights",
    "get_token_weighting",
    "list_token_weightings",
    "register_token_weighting",
    "validate_token_weighting",
]
