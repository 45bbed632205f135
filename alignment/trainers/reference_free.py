"""`PreferenceTrainer` without a reference model, when every selected loss is reference-free (SimPO, CPO, ORPO, SFT).

TRL's `DPOTrainer.__init__` always builds a reference (`create_model_from_path` on the policy's id) unless PEFT or
``precompute_ref_log_probs`` is on; the latter would still hash every weight and run a pass over the data. Here the
reference load is skipped at its source for the duration of TRL's ``__init__``, so ``trainer.ref_model`` is None, no
second copy of the weights is ever in memory, and `_compute_loss` runs no reference forward (the batch's
``ref_*_logps`` are None, which reference-free losses never read). Mixing in a loss that reads the reference keeps
the normal path: the reference is then built and run for it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import trl.trainer.dpo_trainer as trl_dpo_trainer


def check_reference_free(args, specs, ref_model) -> bool:
    """True when every loss in ``specs`` is reference-free; then refuse settings that need a reference model."""
    if not all(spec.reference_free for spec in specs):
        return False
    names = [spec.name for spec in specs]
    conflicts = {
        "ref_model": ref_model is not None,
        "sync_ref_model": bool(getattr(args, "sync_ref_model", False)),
        "reference_cache_dir": bool(getattr(args, "reference_cache_dir", None)),
    }
    for option, is_set in conflicts.items():
        if is_set:
            raise ValueError(f"`{option}` is set but loss_type {names} is reference-free: it never reads a "
                             f"reference model, so none is built or run. Remove `{option}` (or add a loss that uses a "
                             "reference).")
    return True


@contextlib.contextmanager
def without_reference_model(active: bool, *, policy_from_path: bool) -> Iterator[None]:
    """While active, TRL's `DPOTrainer.__init__` builds no reference model.

    TRL calls `create_model_from_path` once for the policy when ``model`` is a path (``policy_from_path``) and then
    once for the reference; the reference call returns None, which every later step of TRL's ``__init__`` treats as
    "no reference model" (PEFT-style). The original function is restored on exit, even on error.
    """
    if not active:
        yield
        return
    original = trl_dpo_trainer.create_model_from_path
    calls = {"left_for_policy": 1 if policy_from_path else 0}

    def create_policy_only(*args, **kwargs):
        if calls["left_for_policy"]:
            calls["left_for_policy"] -= 1
            return original(*args, **kwargs)
        return None

    trl_dpo_trainer.create_model_from_path = create_policy_only
    try:
        yield
    finally:
        trl_dpo_trainer.create_model_from_path = original
