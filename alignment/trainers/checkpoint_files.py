"""Where a trainer's own per-process state goes inside a checkpoint directory."""

from __future__ import annotations

import os


def per_process_state_file(args, directory: str, filename: str) -> str:
    """``<directory>/<filename>`` in a one-process run; ``<stem>_<rank><suffix>`` per process when several save.

    Saved next to the RNG state (every process, every checkpoint), as state of the same kind: each process restores
    its own copy on resume.
    """
    if args.world_size <= 1:
        return os.path.join(directory, filename)
    stem, suffix = os.path.splitext(filename)
    return os.path.join(directory, f"{stem}_{args.process_index}{suffix}")
