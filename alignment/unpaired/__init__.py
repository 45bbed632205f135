"""Unpaired preference losses (KTO and TRL's unpaired loss types), registered by name in `UNPAIRED_LOSSES`.

Import this package to register every built-in unpaired loss. `alignment.trainers.kto.KTOAlignmentTrainer` selects one
with the recipe's ``loss_type``; `kl_reference_point` is KTO's reference point z_ref.
"""

from .registry import (
    CONFIG_HPARAMS,
    UNPAIRED_LOSSES,
    UnpairedLossSpec,
    by_label,
    kl_reference_point,
    resolve_unpaired_loss,
)

# Importing the modules registers their losses.
from . import apo_zero_unpaired, kto  # noqa: E402,F401  isort: skip

__all__ = ["CONFIG_HPARAMS", "UNPAIRED_LOSSES", "UnpairedLossSpec", "by_label", "kl_reference_point",
           "resolve_unpaired_loss"]
