"""Checks of a recipe's local text data files before `datasets` reads them: empty files and bytes that are not UTF-8.

Why: `datasets` reports these badly, or not at all. An empty ``.jsonl``/``.json`` fails with a bare `StopIteration`,
an empty ``.csv`` with "An error occurred while generating the dataset"; Latin-1 bytes in a ``.csv`` give the same
generic error, and in a ``.jsonl`` they load without complaint (pyarrow keeps the raw bytes) and fail later, at the
first read of that row, with a `UnicodeDecodeError` deep inside tokenization. Here each gets a `ValueError` before
anything is loaded that names the file, the recipe field that points at it, the line (and column) of the first bad
byte, and the fix.

Which files: those `datasets.load_dataset` itself would read, resolved by `datasets` (`dataset_module_factory`) from
the same arguments, for local paths only; a Hub dataset is not read here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .data import TASK_SUITE

# Formats `datasets` reads as text (always UTF-8). Parquet/Arrow are binary and carry their own encoding.
TEXT_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")
# Formats whose first line is a header, so one line holds no rows.
_HEADER_SUFFIXES = (".csv", ".tsv")
_CHUNK_BYTES = 1 << 23


def _whole_lines(path: Path) -> Iterator[bytes]:
    """The file's bytes in blocks that end at a newline (except the last). UTF-8 never uses the byte 0x0A inside a
    multi-byte character, so each block decodes on its own and errors are located exactly."""
    pending = b""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK_BYTES), b""):
            data = pending + block
            cut = data.rfind(b"\n") + 1
            if cut:
                yield data[:cut]
            pending = data[cut:]
    if pending:
        yield pending


def check_data_file(path: str | os.PathLike, *, named_by: str = "the recipe") -> None:
    """`ValueError` if the text data file `path` holds no rows or is not valid UTF-8.

    Empty: no byte other than whitespace, or (``.csv``/``.tsv``) a header line and nothing else. Not UTF-8: the first
    undecodable byte, with its 1-based line and column. `named_by` says which recipe field points at the file.
    One streaming pass at C speed (``bytes.decode`` per block of whole lines).
    """
    path = Path(path)
    line, rows = 1, 0
    for block in _whole_lines(path):
        try:
            block.decode("utf-8")
        except UnicodeDecodeError as error:
            before = block[:error.start]
            at_line = line + before.count(b"\n")
            column = error.start - (before.rfind(b"\n") + 1) + 1
            bad = block[error.start:error.end]
            fixed = path.with_name(path.stem + ".utf8" + path.suffix)
            raise ValueError(
                f"Data file {path} (from {named_by}) is not UTF-8: line {at_line}, column {column} has the byte(s) "
                f"{bad.hex(' ')} ({error.reason}). `datasets` reads {path.suffix} files as UTF-8. Re-save the file as "
                f"UTF-8, e.g. if it is Latin-1 / Windows-1252: `iconv -f latin1 -t utf-8 {path} > {fixed} && mv "
                f"{fixed} {path}`."
            ) from None
        rows += sum(1 for piece in block.split(b"\n") if piece.strip())
        line += block.count(b"\n")
    header = 1 if path.suffix in _HEADER_SUFFIXES else 0
    if rows <= header:
        what = "only a header line" if rows else ("no data" if path.stat().st_size == 0 else "only whitespace")
        raise ValueError(f"Data file {path} (from {named_by}) is empty: it holds {what}, so there are no rows to "
                         "train on. Fill it (or re-export it), or remove it from the recipe.")


def resolve_local_data_files(path: str, *, name: str | None = None, data_dir: str | None = None,
                             data_files: Any = None) -> list[Path]:
    """The local files `datasets.load_dataset(path, name=..., data_dir=..., data_files=...)` reads, as `datasets`
    resolves them (split patterns, ``data_dir``, README configs); ``[]`` for a Hub dataset or what `datasets` cannot
    resolve (then `load_dataset` raises its own error)."""
    from datasets.load import dataset_module_factory
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    local = Path(path)
    if local.is_file():
        return [local]
    # A Hub id is downloaded by `load_dataset`; resolving it here would cost a round trip for nothing we can check.
    if not (local.is_dir() or (path in _PACKAGED_DATASETS_MODULES and data_files is not None)):
        return []
    try:
        module = dataset_module_factory(path, data_dir=data_dir, data_files=data_files)
    except Exception:  # noqa: BLE001 - `load_dataset` reports the same failure with its own message
        return []
    resolved = module.builder_kwargs.get("data_files")
    if resolved is None:
        configs = module.builder_configs_parameters.builder_configs or []
        config = next((c for c in configs if c.name == name), configs[0] if configs else None)
        resolved = getattr(config, "data_files", None)
    files = [file for split_files in (resolved or {}).values() for file in split_files]
    return [Path(file) for file in files if os.path.isfile(file)]


def recipe_data_sources(script_args, mixture_args=None) -> list[tuple[str, Any]]:
    """``(recipe field, source)`` for every dataset a recipe names; a source has ``path``, ``name``, ``data_dir`` and
    ``data_files`` (a `datasets:` entry, a `share_mixture:` or `dataset_mixture:` entry, or `dataset_name` /
    `dataset_config`)."""
    from types import SimpleNamespace

    sources = []
    if getattr(script_args, "dataset_name", None):
        sources.append(("`dataset_name`", SimpleNamespace(path=script_args.dataset_name,
                                                          name=getattr(script_args, "dataset_config", None),
                                                          data_dir=None, data_files=None)))
    share_mixture = getattr(script_args, "share_mixture", None)
    for i, source in enumerate(getattr(share_mixture, "datasets", None) or []):
        sources.append((f"`share_mixture.datasets[{i}]`", source))
    handbook_mixture = getattr(script_args, "dataset_mixture", None)
    for i, source in enumerate(getattr(handbook_mixture, "datasets", None) or []):
        sources.append((f"`dataset_mixture.datasets[{i}]`", SimpleNamespace(path=source.id, name=source.config,
                                                                              data_dir=None, data_files=None)))
    for i, source in enumerate(getattr(mixture_args, "datasets", None) or []):
        sources.append((f"`datasets[{i}]`", source))
    return sources


def check_recipe_data_files(script_args, mixture_args=None) -> None:
    """`check_data_file` on every local text file the recipe's datasets read (see the module docstring)."""
    for field, source in recipe_data_sources(script_args, mixture_args):
        if source.path == TASK_SUITE:
            continue
        for file in resolve_local_data_files(source.path, name=getattr(source, "name", None),
                                             data_dir=getattr(source, "data_dir", None),
                                             data_files=getattr(source, "data_files", None)):
            if file.suffix in TEXT_SUFFIXES:
                check_data_file(file, named_by=field)
