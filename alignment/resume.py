"""Which checkpoint `resume_from_checkpoint: true` resumes from: the newest *complete* one.

A run killed while saving (preemption past its grace period, a node failure, a full disk) leaves a `checkpoint-N`
directory with some files missing or cut short. transformers' `get_last_checkpoint` picks the highest N regardless,
and the resume then crashes on it until someone deletes it by hand. Here every checkpoint, newest first, is checked
for the files the Trainer (and this project's trainers) write and will read back on resume; the first one that
passes is used, and each newer one is reported with the file that made it fail. Nothing is ever deleted.

What is checked, and how cheaply (nothing is loaded into memory beyond headers and small JSON files):

- ``trainer_state.json`` exists and parses with a ``global_step`` (rank 0 writes it *last* in `_save_checkpoint`,
  after the weights, optimizer, scheduler, its RNG state and its per-process state files);
- the weights: ``model.safetensors``, or ``model.safetensors.index.json`` and every shard it names, or
  ``pytorch_model.bin`` (+ index), or a PEFT adapter (``adapter_model.safetensors`` / ``.bin``), or a DeepSpeed tag
  directory (``latest`` names it; it holds the model states), or an FSDP model directory / file;
- unless ``save_only_model``: the optimizer (``optimizer.pt``, DeepSpeed's optimizer states, FSDP's optimizer) and
  the scheduler (``scheduler.pt``; DeepSpeed checkpoints may carry their scheduler inside the tag instead), and the
  RNG state of rank 0;
- per-process files (HF's ``rng_state_<rank>.pth``, and this project's ``loss_state``, ``domain_weights``,
  ``reward_weighting`` files, named by `per_process_file_name`): in a checkpoint written by several processes, every
  kind that rank 0 wrote must be there for every rank of this run (`world_size`), because each rank reads its own
  file on resume. Rank 0 writes its files before ``trainer_state.json``, so the kinds rank 0 wrote are the kinds the
  run used; the other ranks write theirs without waiting for rank 0 and may have been killed first;
- every file of a checkable format, required or not: ``*.safetensors`` through ``safetensors.safe_open`` (header
  parsed, data length checked against the header: a cut-short file fails), torch files (``*.pt``, ``*.pth``,
  ``*.bin``) through their zip central directory (written last by `torch.save`, so a cut-short file has none) and
  the ``data.pkl`` record in it, ``*.json`` files parsed.

Not checked: bit flips inside a file whose length and directory are intact (that would mean reading every byte, e.g.
the whole optimizer state).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from .trainers.process_state import per_process_file_name

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")  # transformers' PREFIX_CHECKPOINT_DIR, `checkpoint-<step>`
TRAINER_STATE = "trainer_state.json"
RNG_STATE = "rng_state.pth"
_RANK0_FILE = re.compile(r"^(?P<stem>.+)_0(?P<suffix>\.pth?)$")  # `<stem>_0.pt(h)`: rank 0's per-process file
_ZERO_RANK = re.compile(r"zero_pp_rank_(\d+)_")


# ------------------------------------------------------------------------------------------------- one file

def _safetensors_problem(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:  # SafetensorError for a bad header or a file shorter than its header says
        return f"{path.name} is unreadable ({type(exc).__name__}: {exc})"
    return None


def _torch_file_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"{path.name} is truncated or not a torch file ({type(exc).__name__}: {exc})"
    if not any(name.endswith("data.pkl") for name in names):
        return f"{path.name} has no data.pkl record (not a torch.save file)"
    return None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        return f"{path.name} does not parse as JSON ({type(exc).__name__}: {exc})"
    return None


_CHECKERS: dict[str, Callable[[Path], str | None]] = {
    ".safetensors": _safetensors_problem,
    ".pt": _torch_file_problem,
    ".pth": _torch_file_problem,
    ".bin": _torch_file_problem,
    ".json": _json_problem,
}


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be read back (missing, empty, truncated, unparsable), or None if it looks whole."""
    if not path.is_file():
        return f"{path.name} is missing"
    if path.stat().st_size == 0:
        return f"{path.name} is empty"
    checker = _CHECKERS.get(path.suffix)
    return checker(path) if checker is not None else None


# ----------------------------------------------------------------------------------------------- one checkpoint

def _trainer_state_problem(directory: Path) -> str | None:
    path = directory / TRAINER_STATE
    problem = file_problem(path)
    if problem is not None:
        return problem
    if "global_step" not in json.loads(path.read_text()):
        return f"{TRAINER_STATE} has no global_step"
    return None


def _deepspeed_tag(directory: Path) -> Path | None:
    """The DeepSpeed tag directory named in ``latest`` (DeepSpeed writes ``latest`` after the tag's files)."""
    latest = directory / "latest"
    if not latest.is_file():
        return None
    return directory / latest.read_text().strip()


def _sharded_weights_problems(index: Path) -> list[str]:
    problem = file_problem(index)
    if problem is not None:
        return [problem]
    shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
    if not shards:
        return [f"{index.name} names no shards"]
    return [p for p in (file_problem(index.parent / shard) for shard in shards) if p is not None]


def _weights_problems(directory: Path) -> list[str]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (directory / index).exists():
            return _sharded_weights_problems(directory / index)
    single = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin",
              "pytorch_model_fsdp_0.bin")
    if any((directory / name).exists() for name in single):
        return []  # present; every such file is parsed by `_every_file_problems`
    tag = _deepspeed_tag(directory)
    if tag is not None:
        return [] if any(tag.glob("*model_states.pt")) else [f"DeepSpeed tag {tag.name}/ has no model states"]
    if (directory / "pytorch_model_fsdp_0" / ".metadata").is_file():
        return []  # torch.distributed.checkpoint writes `.metadata` after every shard
    return ["no model weights (model.safetensors, a sharded index, an adapter, or DeepSpeed/FSDP states)"]


def _optimizer_problems(directory: Path, world_size: int) -> list[str]:
    tag = _deepspeed_tag(directory)
    if tag is not None:  # DeepSpeed: one optimizer-state file per data-parallel rank, scheduler inside too
        if not tag.is_dir():
            return [f"DeepSpeed tag {tag.name}/ named in `latest` is missing"]
        files = sorted(tag.glob("*optim_states.pt"))
        problems = [p for p in (file_problem(f) for f in [*files, *tag.glob("*model_states.pt")]) if p is not None]
        ranks = {int(m.group(1)) for f in files if (m := _ZERO_RANK.search(f.name))}
        if not files:
            problems.append(f"DeepSpeed tag {tag.name}/ has no optimizer states")
        elif ranks:  # ZeRO: one file per rank; as for the per-process files, this run's ranks must all be there
            expected = world_size if world_size > 1 else max(ranks) + 1
            problems += [f"{tag.name}/ has no optimizer states of rank {r}" for r in range(expected) if r not in ranks]
        return problems
    problems = []
    if not any((directory / name).exists() for name in ("optimizer.pt", "optimizer.bin", "optimizer_0.bin")) \
            and not (directory / "optimizer_0" / ".metadata").is_file():
        problems.append("optimizer.pt is missing")
    if not (directory / "scheduler.pt").exists():
        problems.append("scheduler.pt is missing")
    return problems


def _per_process_problems(directory: Path, world_size: int, save_only_model: bool) -> list[str]:
    names = {f.name for f in directory.iterdir() if f.is_file()}
    kinds = {m.group("stem") + m.group("suffix") for name in names if (m := _RANK0_FILE.match(name))}
    if not kinds:
        # Written by one process: plain names, each parsed by `_every_file_problems`. (Resumed by several processes,
        # HF restores no RNG state and says so; the project's state loaders name the file they miss.)
        return [] if save_only_model or RNG_STATE in names else [f"{RNG_STATE} is missing"]
    if not save_only_model:
        kinds.add(RNG_STATE)  # HF writes it on every rank at every full save
    if world_size > 1:
        ranks = world_size  # each of this run's ranks reads its own file
        why = f"did not finish saving, or the checkpoint was written by fewer than this run's {world_size} processes"
    else:
        # A one-process resume reads none of them; require every rank the checkpoint itself names (at least 2).
        ranks = 2
        for kind in kinds:
            stem, suffix = os.path.splitext(kind)
            pattern = re.compile(rf"^{re.escape(stem)}_(\d+){re.escape(suffix)}$")
            ranks = max([ranks, *(1 + int(m.group(1)) for name in names if (m := pattern.match(name)))])
        why = "did not finish saving"
    return [f"{name} is missing (rank {rank} {why})"
            for kind in sorted(kinds) for rank in range(ranks)
            if (name := per_process_file_name(kind, rank=rank, world_size=ranks)) not in names]


def _every_file_problems(directory: Path) -> list[str]:
    return [p for p in (file_problem(f) for f in sorted(directory.iterdir()) if f.is_file()) if p is not None]


def checkpoint_problems(directory: str | os.PathLike, *, world_size: int = 1,
                        save_only_model: bool = False) -> list[str]:
    """Everything that keeps `directory` from being resumed by a run of `world_size` processes; [] if complete.

    ``save_only_model`` checkpoints hold no optimizer, scheduler or RNG state, so those are not required then.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return [f"{directory} is not a directory"]
    problems = [p for p in [_trainer_state_problem(directory)] if p is not None]
    problems += _weights_problems(directory)
    if not save_only_model:
        problems += _optimizer_problems(directory, world_size)
    problems += _per_process_problems(directory, world_size, save_only_model)
    problems += [p for p in _every_file_problems(directory) if p not in problems]
    return problems


# ------------------------------------------------------------------------------------------------ the choice

def checkpoints_newest_first(output_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-<step>`` directories of `output_dir`, highest step first (as `get_last_checkpoint` orders)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in output_dir.iterdir() if d.is_dir() and (m := CHECKPOINT_NAME.match(d.name))]
    return [d for _, d in sorted(found, reverse=True)]


def newest_complete_checkpoint(output_dir: str | os.PathLike, *, world_size: int = 1,
                               save_only_model: bool = False) -> tuple[Path | None, list[tuple[Path, list[str]]]]:
    """``(newest complete checkpoint or None, [(newer incomplete checkpoint, its problems), ...])``.

    Checks newest first and stops at the first complete one, so older checkpoints are not read at all.
    """
    skipped = []
    for checkpoint in checkpoints_newest_first(output_dir):
        problems = checkpoint_problems(checkpoint, world_size=world_size, save_only_model=save_only_model)
        if not problems:
            return checkpoint, skipped
        skipped.append((checkpoint, problems))
    return None, skipped
