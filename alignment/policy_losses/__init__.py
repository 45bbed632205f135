"""Per-token policy losses for group-relative RL (`GroupRLTrainer`), registered by name, one file per loss.

A recipe selects one with ``policy_loss: <name>`` and ``policy_loss_kwargs`` (unset: TRL's own GRPO loss runs). The
loss gives ``(per_token_loss [B, T], metrics)`` from the per-token inputs in `POLICY_LOSS_INPUTS`; the trainer reduces
it with TRL's ``loss_type`` aggregation from `AGGREGATIONS`. Entry points: `compute_policy_loss`, `aggregate`,
`validate_policy_loss` (start-up check); `POLICY_LOSSES.describe()` lists the losses and their hyper-parameters.
Import this package to register every built-in one.
"""

from .registry import (
    AGGREGATION_INPUTS,
    AGGREGATIONS,
    POLICY_LOSS_INPUTS,
    POLICY_LOSSES,
    aggregate,
    compute_policy_loss,
    validate_policy_loss,
)

# Importing the modules registers their policy losses and aggregations.
from . import aggregations, apa, clipped, hapo, sign_clipped  # noqa: E402,F401  isort: skip

__all__ = [
    "AGGREGATION_INPUTS",
    "AGGREGATIONS",
    "POLICY_LOSS_INPUTS",
    "POLICY_LOSSES",
    "aggregate",
    "compute_policy_loss",
    "validate_policy_loss",
]
