"""A trainer's own per-process state inside a checkpoint directory (loss state, domain weights, reward weights).

Saved next to the RNG state (every process, every checkpoint), as state of the same kind: each process restores its
own copy on resume (from `_load_optimizer_and_scheduler`, which runs once per resume on every rank and backend).
"""

from __future__ import annotations

import os
from typing import Any

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


def load_per_process_state(args, checkpoint: str, filename: str, missing_hint: str) -> Any:
    """This process's saved state; a missing file is a `FileNotFoundError` ending with ``missing_hint`` (why it
    can be missing and what to do), a NaN/inf in it a `ValueError` naming the file and key."""
    path = per_process_state_file(args, checkpoint, filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: {missing_hint}")
    state = torch.load(path, weights_only=True)
    check_finite_state(state, source=path)
    return state
