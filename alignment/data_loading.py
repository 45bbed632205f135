"""Turn a recipe's dataset fields into a `DatasetDict`, the way TRL's scripts do, plus the embedded task suite.

`alignment.data_sources.load_source` is the one loader of a dataset source, used for `dataset_name` and for every
mixture entry (`share_mixture`, the handbook `dataset_mixture`).
"""

from __future__ import annotations

import logging

from datasets import DatasetDict
from trl import get_dataset

from . import mixtures
from .data import TASK_SUITE, load_task_suite
from .data.worked import with_worked_answers
from .data_files import check_recipe_data_files
from .data_sources import load_source, with_named_splits

logger = logging.getLogger("alignment")

# The fields that only describe the embedded task suite, with their unset values.
TASK_SUITE_FIELDS = {"task_domains": None, "train_limit_per_domain": None, "task_label_noise": 0.0,
                     "task_answer_style": "final"}


def _names_task_suite(script_args, mixture_args) -> bool:
    """Whether the recipe's data is the embedded task suite (the only data the task-suite fields describe)."""
    other = (getattr(script_args, "share_mixture", None) is not None
             or getattr(script_args, "dataset_mixture", None) is not None
             or bool(getattr(mixture_args, "datasets", None)))
    return script_args.dataset_name == TASK_SUITE and not other


def _given_on_command_line(name: str, cli_overrides) -> bool:
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in cli_overrides)


def scope_task_suite_fields(parsed, cli_overrides=()) -> list[str]:
    """Unset the task-suite fields of a recipe pointed at other data; returns the names unset.

    The shipped recipes set `task_domains` & co. for their `dataset_name: task-suite`. Run with
    `--dataset_name my/data` (or a mixture), those fields describe nothing: coming from the recipe file they are
    dropped with one warning that names them; given on the command line next to other data they are an error (the
    user asked for something that cannot apply). ``parsed`` are the dataclasses `parse_recipe` returns;
    ``cli_overrides`` the command-line arguments besides `--config`.
    """
    script_args = next((p for p in parsed if hasattr(p, "task_domains")), None)
    mixture_args = next((p for p in parsed if hasattr(p, "datasets") and hasattr(p, "test_split_size")), None)
    if script_args is None or _names_task_suite(script_args, mixture_args):
        return []
    if not (script_args.dataset_name or getattr(script_args, "share_mixture", None) is not None
            or getattr(script_args, "dataset_mixture", None) is not None or getattr(mixture_args, "datasets", None)):
        return []  # no data named at all: `load_recipe_datasets` says so
    set_fields = [name for name, unset in TASK_SUITE_FIELDS.items() if getattr(script_args, name, unset) != unset]
    explicit = [name for name in set_fields if _given_on_command_line(name, cli_overrides)]
    data = script_args.dataset_name or "a mixture"
    if explicit:
        raise ValueError(f"{', '.join(f'`--{n}`' for n in explicit)} on the command line: these fields only describe "
                         f"`dataset_name: task-suite`, but the data is {data!r}. Drop them (`--task_domains none` "
                         "unsets a recipe's task domains).")
    for name in set_fields:
        setattr(script_args, name, TASK_SUITE_FIELDS[name])
    if set_fields:
        logger.warning("Ignoring %s from the recipe: these fields only describe `dataset_name: task-suite`, and the "
                       "data is %r.", ", ".join(f"`{n}`" for n in set_fields), data)
    return set_fields


def limit_rows_per_domain(dataset, limit: int | None, column: str = "domain"):
    """The first ``limit`` rows of each value of ``column`` (or of the whole dataset without that column)."""
    if limit is None or dataset is None:
        return dataset
    if column not in dataset.column_names:
        return dataset.select(range(min(limit, len(dataset))))
    from collections import Counter

    seen, keep = Counter(), []
    for i, value in enumerate(dataset[column]):
        seen[value] += 1
        if seen[value] <= limit:
            keep.append(i)
    return dataset.select(keep)


def load_recipe_datasets(script_args, mixture_args=None, fmt: str = "preference") -> DatasetDict:
    """Load the training data named by a recipe.

    - `dataset_name: task-suite` loads the shipped task-suite snapshot in format `fmt` (`preference`, `sft` or
      `prompt_only`), restricted to `task_domains`; its `test` split is the held-out evaluation set.
      `task_label_noise` flips that fraction of the training pairs (never the test split);
    - a `datasets:` mixture uses TRL's `get_dataset`;
    - a `share_mixture:` section mixes datasets at given shares (`alignment.mixtures.load_share_mixture`);
    - a `dataset_mixture:` section in the alignment-handbook schema loads with the handbook's semantics
      (`alignment.mixtures.load_handbook_mixture`);
    - anything else goes to `load_source` (a Hub id, a local directory or file, a `save_to_disk` directory).
    """
    check_recipe_data_files(script_args, mixture_args)  # empty / non-UTF-8 local files: named, before loading
    sections = [name for name in ("share_mixture", "dataset_mixture") if getattr(script_args, name, None) is not None]
    if len(sections) > 1:
        raise ValueError("The recipe sets both `share_mixture` and `dataset_mixture`; keep one of them.")
    if sections:
        section = sections[0]
        if script_args.dataset_name or (mixture_args is not None and mixture_args.datasets):
            raise ValueError(f"The recipe sets `{section}` and also `dataset_name` or a `datasets:` mixture; "
                             "keep one of them.")
        ignored = [name for name, unset in TASK_SUITE_FIELDS.items() if getattr(script_args, name, unset) != unset]
        if ignored:
            raise ValueError(f"{ignored} apply to `dataset_name: task-suite` only; in a `share_mixture`, pick task "
                             "domains with `domains:` on a `path: task-suite` entry.")
        if section == "dataset_mixture":
            return mixtures.load_handbook_mixture(script_args.dataset_mixture)
        return mixtures.load_share_mixture(script_args.share_mixture, fmt=fmt,
                                           train_split=script_args.dataset_train_split,
                                           test_split=script_args.dataset_test_split,
                                           eval_limit_per_domain=script_args.eval_limit_per_domain)
    if mixture_args is not None and mixture_args.datasets:
        if script_args.dataset_name:
            raise ValueError(
                "The recipe sets both `dataset_name` and a `datasets` mixture; keep one of them."
            )
        return get_dataset(mixture_args)
    if not script_args.dataset_name:
        raise ValueError(
            "The recipe names no data: set `dataset_name` (a Hub id, a local path, or `task-suite` for the embedded "
            "task suite), a `datasets:` mixture, a `dataset_mixture:` (handbook schema) or a `share_mixture:`."
        )
    if script_args.dataset_name == TASK_SUITE:
        splits = DatasetDict(
            {
                # Label noise (a robustness tier) applies to the training pairs only; the test split stays clean.
                script_args.dataset_train_split: load_task_suite(
                    "train", fmt, domains=script_args.task_domains,
                    limit_per_domain=script_args.train_limit_per_domain,
                    label_noise=getattr(script_args, "task_label_noise", 0.0),
                ),
                script_args.dataset_test_split: load_task_suite(
                    "test", fmt, domains=script_args.task_domains,
                    limit_per_domain=script_args.eval_limit_per_domain,
                ),
            }
        )
        if getattr(script_args, "task_answer_style", "final") == "worked":
            if fmt != "preference":
                raise ValueError("`task_answer_style: worked` applies to preference data only.")
            splits = splits.map(with_worked_answers, desc="Showing the calculation in answers")
        return splits
    for name, unset in TASK_SUITE_FIELDS.items():
        if getattr(script_args, name, unset) != unset:
            raise ValueError(f"`{name}` only applies to `dataset_name: task-suite`; remove it for other datasets.")
    data = load_source(script_args.dataset_name, name=script_args.dataset_config,
                       streaming=script_args.dataset_streaming)
    return with_named_splits(data, script_args.dataset_name,
                              (script_args.dataset_train_split, script_args.dataset_test_split),
                              streaming=script_args.dataset_streaming)


def split_or_fail(datasets: DatasetDict, split: str, field_name: str):
    if split not in datasets:
        raise ValueError(
            f"The dataset has no split {split!r} (splits: {sorted(datasets)}). Set `{field_name}` to one of them."
        )
    return datasets[split]
