"""`TrainerHooks`: the one place our trainers override `transformers.Trainer`'s checkpoint and column hooks.

Components (loss states, domain reweighting, reward weighting, SparsePO mask heads, the reference cache) do not
override these methods themselves; they register with the trainer instead:

- ``self.process_states.register(file, holder, missing_hint=...)`` (`ProcessStates`): saved with every checkpoint,
  restored and checked for NaN/inf on resume;
- ``self.kept_columns.append(column)``: a dataset column the Trainer must not drop before the collator sees it.

Put `TrainerHooks` first in a trainer's bases: each hook then runs once, right before the Trainer's own, with no
``super()`` chain through the other mixins.

Why a base class and not a `TrainerCallback`: no callback event fits. ``on_save`` runs after ``trainer_state.json``
is written (the file `alignment.resume` takes as "rank 0 finished this checkpoint") and after old checkpoints are
rotated away, and not for the final ``save_model``; no event receives the checkpoint a run resumes from (it reaches
``_load_optimizer_and_scheduler`` only, once per resume on every rank and backend, before the first batch); and
columns are kept only through ``_set_signature_columns_if_needed``.
"""

from __future__ import annotations

from .process_state import ProcessStates


class TrainerHooks:
    """Checkpoint and column hooks for a `transformers.Trainer` subclass (first base); see the module docstring."""

    def __init__(self, *posargs, **kwargs):
        # Created before the parent's __init__ so that components can register from their own __init__ at any point.
        self.process_states = ProcessStates()
        self.kept_columns: list[str] = []
        super().__init__(*posargs, **kwargs)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        for column in self.kept_columns:
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # Shared state (the mask heads) goes beside the weights, in checkpoints and the final save.
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            self.process_states.save_shared(output_dir if output_dir is not None else self.args.output_dir)

    def _save_rng_state(self, output_dir: str) -> None:
        # Per-process state is of the same kind as the RNG state, saved at the same point of every checkpoint (by
        # every rank, before `trainer_state.json`), so it is written wherever the RNG state is.
        super()._save_rng_state(output_dir)
        self.process_states.save(self.args, output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # Called once, on every rank and with every backend, when `train(resume_from_checkpoint=...)` starts, before
        # the first batch is drawn (unlike `_load_rng_state`, which is skipped with `ignore_data_skip`).
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.process_states.load(self.args, checkpoint)
