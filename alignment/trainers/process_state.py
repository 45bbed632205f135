"""A trainer's own state inside a checkpoint directory (loss states, domain weights, reward weights, SparsePO mask
heads): one registry, `ProcessStates`, saved / loaded / verified in one place.

Components register a *holder* (any object with ``state_dict()`` / ``load_state_dict(state)``) under its file name
with the hint a missing file gets; `alignment.trainers.hooks.TrainerHooks` calls `save` / `save_shared` / `load` from
the only overrides of the Trainer's checkpoint hooks. Two kinds of file:

- per-process (the default): saved next to the RNG state (every process, every checkpoint), as state of the same
  kind: each process restores its own copy on resume (from `_load_optimizer_and_scheduler`, which runs once per
  resume on every rank and backend). ``<name>`` with one process, ``<stem>_<rank><suffix>`` with several;
- shared (``shared=True``, state that belongs with the weights, e.g. the mask heads): one file written by the main
  process beside the model weights with every save (checkpoints and the final model), read by every process.

Every restored state is checked for NaN/inf (`check_finite_state`), naming the file and key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .finite_guard import check_finite_state


def per_process_file_name(filename: str, *, rank: int, world_size: int) -> str:
    """``<filename>`` in a one-process run; ``<stem>_<rank><suffix>`` per process when several save (HF's
    ``rng_state_<rank>.pth`` scheme, which `alignment.resume` relies on to check every rank's files)."""
    if world_size <= 1:
        return filename
    stem, suffix = os.path.splitext(filename)
    return f"{stem}_{rank}{suffix}"


def per_process_state_file(args, directory: str, filename: str) -> str:
    return os.path.join(directory, per_process_file_name(filename, rank=args.process_index,
                                                         world_size=args.world_size))


def save_per_process_state(args, directory: str, filename: str, state: Any) -> None:
    torch.save(state, per_process_state_file(args, directory, filename))


def _read_state(path: str, missing_hint: str, map_location: str | None = None) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: {missing_hint}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    check_finite_state(state, source=path)
    return state


def load_per_process_state(args, checkpoint: str, filename: str, missing_hint: str) -> Any:
    """This process's saved state; a missing file is a `FileNotFoundError` ending with ``missing_hint`` (why it
    can be missing and what to do), a NaN/inf in it a `ValueError` naming the file and key."""
    return _read_state(per_process_state_file(args, checkpoint, filename), missing_hint)


class StateHolder(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class StateGroup:
    """Several holders saved as one file, ``{key: holder.state_dict()}`` (e.g. one `LossState` per stateful loss).

    ``kind`` names what a key is in the error for a key the file lacks ("loss" -> "no saved state for loss 'x'").
    """

    def __init__(self, holders: Mapping[str, StateHolder], kind: str):
        self.holders = holders
        self.kind = kind

    def state_dict(self) -> dict[str, Any]:
        return {key: holder.state_dict() for key, holder in self.holders.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, holder in self.holders.items():
            if key not in state:
                raise KeyError(f"no saved state for {self.kind} {key!r} (it has {sorted(state)}).")
            holder.load_state_dict(state[key])


@dataclass(frozen=True)
class StateFile:
    """One registered file: what is saved in it, what a missing file means, where it lives."""

    filename: str
    holder: StateHolder
    missing_hint: str
    shared: bool = False
    # Called after a restore, for a trainer that keeps a copy of what the holder holds (GroupRL's `reward_weights`).
    after_load: Callable[[], None] | None = None
    # Restores this file from a checkpoint directory instead of `ProcessStates.load_file` (for state a trainer also
    # exposes as a public method that callers hook, e.g. `PreferenceTrainer.load_loss_state`).
    restore: Callable[[str], None] | None = None


class ProcessStates:
    """The registry of a trainer's checkpointed state, in registration order (the order files are saved and loaded).

    ``args`` below is the trainer's `TrainingArguments` (``process_index`` and ``world_size`` name the per-process
    files).
    """

    def __init__(self):
        self.files: dict[str, StateFile] = {}

    def register(self, filename: str, holder: StateHolder, *, missing_hint: str, shared: bool = False,
                 after_load: Callable[[], None] | None = None, restore: Callable[[str], None] | None = None) -> None:
        """Save ``holder`` as ``filename`` with every checkpoint and restore it on resume.

        ``missing_hint`` ends the `FileNotFoundError` of a checkpoint without the file: why it can be missing and
        what to do. ``shared``: one file beside the weights (main process, every save) instead of one per process.
        """
        if filename in self.files:
            raise ValueError(f"Trainer state file {filename!r} is registered twice.")
        self.files[filename] = StateFile(filename, holder, missing_hint, shared, after_load, restore)

    def __contains__(self, filename: str) -> bool:
        return filename in self.files

    def save(self, args, output_dir: str) -> None:
        """Every process: write its per-process files into a checkpoint (from `_save_rng_state`)."""
        for entry in self.files.values():
            if not entry.shared:
                save_per_process_state(args, output_dir, entry.filename, entry.holder.state_dict())

    def save_shared(self, output_dir: str) -> None:
        """Main process: write the shared files beside the model weights (from `_save`)."""
        for entry in self.files.values():
            if entry.shared:
                torch.save(entry.holder.state_dict(), os.path.join(output_dir, entry.filename))

    def load(self, args, checkpoint: str) -> None:
        """Every process, once per resume: restore every registered file from ``checkpoint``."""
        for entry in self.files.values():
            if entry.restore is not None:
                entry.restore(checkpoint)
            else:
                self.load_file(args, checkpoint, entry.filename)

    def load_file(self, args, checkpoint: str, filename: str) -> None:
        """Restore one registered file: missing -> `FileNotFoundError` with its hint; NaN/inf -> `ValueError` naming
        the file and key; a key a `StateGroup` lacks -> `KeyError` naming the file."""
        entry = self.files[filename]
        if entry.shared:
            # Written by the main process from its device: map to CPU, `load_state_dict` copies into the holder's own.
            path = os.path.join(checkpoint, filename)
            state = _read_state(path, entry.missing_hint, map_location="cpu")
        else:
            path = per_process_state_file(args, checkpoint, filename)
            state = _read_state(path, entry.missing_hint)
        try:
            entry.holder.load_state_dict(state)
        except KeyError as exc:
            raise KeyError(f"{path}: {exc.args[0]}") from None
        if entry.after_load is not None:
            entry.after_load()
