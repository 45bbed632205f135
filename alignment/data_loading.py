"""Turn a recipe's dataset fields into a `DatasetDict`, the way TRL's scripts do, plus the embedded task suite."""

from __future__ import annotations

from datasets import DatasetDict, load_dataset
from trl import get_dataset

from .data_files import check_recipe_data_files

# `dataset_name` value that selects the embedded verifiable task suite instead of a Hub id or a local path.
TASK_SUITE = "task-suite"


def load_recipe_datasets(script_args, mixture_args=None, fmt: str = "preference") -> DatasetDict:
    """Load the training data named by a recipe.

    - `dataset_name: task-suite` loads the shipped task-suite snapshot in format `fmt` (`preference`, `sft` or
      `prompt_only`), restricted to `task_domains`; its `test` split is the held-out evaluation set.
      `task_label_noise` flips that fraction of the training pairs (never the test split);
    - a `datasets:` mixture uses TRL's `get_dataset`;
    - a `dataset_mixture:` section mixes datasets at given shares (`alignment.mixtures.load_share_mixture`);
    - anything else goes to `datasets.load_dataset(dataset_name, name=dataset_config)`, as in TRL.
    """
    check_recipe_data_files(script_args, mixture_args)  # empty / non-UTF-8 local files: named, before loading
    share_mixture = getattr(script_args, "dataset_mixture", None)
    if share_mixture is not None:
        if script_args.dataset_name or (mixture_args is not None and mixture_args.datasets):
            raise ValueError("The recipe sets `dataset_mixture` and also `dataset_name` or a `datasets:` mixture; "
                             "keep one of them.")
        ignored = [name for name, unset in (("task_domains", None), ("task_label_noise", 0.0),
                                            ("task_answer_style", "final"))
                   if getattr(script_args, name, unset) != unset]
        if ignored:
            raise ValueError(f"{ignored} apply to `dataset_name: task-suite` only; in a `dataset_mixture`, pick task "
                             "domains with `domains:` on a `path: task-suite` entry.")
        from .mixtures import load_share_mixture

        return load_share_mixture(share_mixture, fmt=fmt, train_split=script_args.dataset_train_split,
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
            "task suite) or a `datasets:` mixture."
        )
    if script_args.dataset_name == TASK_SUITE:
        from .data import load_task_suite

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
            from .data.worked import with_worked_answers

            splits = splits.map(with_worked_answers, desc="Showing the calculation in answers")
        return splits
    if script_args.task_domains:
        raise ValueError("`task_domains` only applies to `dataset_name: task-suite`; remove it for other datasets.")
    if getattr(script_args, "task_answer_style", "final") != "final":
        raise ValueError("`task_answer_style` only applies to `dataset_name: task-suite`; remove it for other datasets.")
    if getattr(script_args, "task_label_noise", 0.0):
        raise ValueError("`task_label_noise` only applies to `dataset_name: task-suite`; remove it for other datasets.")
    return load_dataset(
        script_args.dataset_name, name=script_args.dataset_config, streaming=script_args.dataset_streaming
    )


def split_or_fail(datasets: DatasetDict, split: str, field_name: str):
    if split not in datasets:
        raise ValueError(
            f"The dataset has no split {split!r} (splits: {sorted(datasets)}). Set `{field_name}` to one of them."
        )
    return datasets[split]
