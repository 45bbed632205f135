"""The one loader of a dataset source: a Hub id, a local data file, a directory of them, or a `save_to_disk` output.

`load_source` serves `dataset_name` (`alignment.data_loading`), every mixture entry (`alignment.mixtures`) and the
margin annotation. Imports nothing of this package, so every data module can import it.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

# `datasets`' builder for each single-file format.
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


def is_saved_to_disk(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
                              or (path / "state.json").exists())


def files_named_after(directory: Path, split: str) -> list[str]:
    """Data files in ``directory`` (or its ``data/``) named after ``split``: ``<split>.jsonl``, ``<split>-00000-of-
    00002.parquet``. `datasets` only knows train/validation/test by name and files ``train_prefs.jsonl`` under
    `train`, so a split such as the handbook's ``train_prefs`` is looked up here."""
    found = []
    for folder in (directory, directory / "data"):
        for file in sorted(folder.glob(f"{split}*")) if folder.is_dir() else ():
            stem = file.name[: -len("".join(file.suffixes))] if file.suffixes else file.name
            if file.suffix in FILE_BUILDERS and (stem == split or stem.startswith(f"{split}-")):
                found.append(str(file))
    return found


def load_source(path: str, *, split: str | None = None, name: str | None = None, data_dir: str | None = None,
                data_files=None, streaming: bool = False) -> Dataset | DatasetDict:
    """One dataset source, as a `Dataset` (``split`` given) or a `DatasetDict` (``split=None``).

    ``path`` is any of:

    - a directory written by `save_to_disk`: a `DatasetDict` keeps its splits, a single `Dataset` becomes split
      ``train``;
    - a single ``.jsonl``/``.json``/``.csv``/``.parquet``/``.arrow`` file: the whole file is split ``train`` (a file
      has no held-out split);
    - a directory of data files, as `datasets` reads it (``train*.jsonl`` -> ``train``, ``test*`` -> ``test``);
      a requested split `datasets` does not name (``train_prefs``) is read from the files named after it;
    - a Hub dataset id, through `datasets.load_dataset` (``name``, ``data_dir``, ``data_files`` passed on).
    """
    local = Path(path)
    if local.suffix in FILE_BUILDERS and not local.exists():
        # A Hub id has no file suffix: this was meant as a local file, and datasets would only say "Couldn't find".
        raise FileNotFoundError(f"No data file at {str(local.resolve())!r} (from {path!r}, read as a local "
                                f"{local.suffix} file since it ends in {local.suffix!r}): check the path in "
                                "`dataset_name` (or the mixture entry); relative paths start at the working directory "
                                f"{str(Path.cwd())!r}.")
    if is_saved_to_disk(local):
        loaded = load_from_disk(str(local))
        loaded = DatasetDict({"train": loaded}) if isinstance(loaded, Dataset) else loaded
    elif local.is_file():
        builder = FILE_BUILDERS.get(local.suffix)
        if builder is None:
            raise ValueError(f"Cannot tell the format of the data file {path!r}: use a "
                             f"{'/'.join(FILE_BUILDERS)} file, a directory of them, a directory written by "
                             "`save_to_disk`, or a Hub id.")
        loaded = load_dataset(builder, data_files={"train": str(local)}, streaming=streaming)
    else:
        if split is not None and local.is_dir() and data_files is None and data_dir is None:
            named = files_named_after(local, split)
            if named and split not in ("train", "test", "validation"):
                return load_dataset(FILE_BUILDERS[Path(named[0]).suffix], data_files={split: named}, split=split,
                                    streaming=streaming)
        if split is not None:
            return load_dataset(path, name=name, data_dir=data_dir, data_files=data_files, split=split,
                                streaming=streaming)
        return load_dataset(path, name=name, data_dir=data_dir, data_files=data_files, streaming=streaming)
    if split is None:
        return loaded
    if split not in loaded:
        raise ValueError(f"{path!r} has no split {split!r} (splits: {sorted(loaded)}); a single file or a saved "
                         "`Dataset` is split `train`.")
    return loaded[split]


def with_named_splits(data, path: str, wanted: tuple[str, ...], streaming: bool = False):
    """Add the ``wanted`` splits a local directory holds as ``<split>.<ext>`` files but `datasets` did not name."""
    local = Path(path)
    if not local.is_dir() or is_saved_to_disk(local):
        return data
    for split in wanted:
        if split not in data and files_named_after(local, split):
            data[split] = load_source(path, split=split, streaming=streaming)
    return data
