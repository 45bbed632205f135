"""Reward models for MADPO: train a Bradley-Terry reward model, then annotate preference pairs with its margins.

The MADPO pipeline (see `alignment.losses.madpo`) is three steps:

1. `reward_main` (`scripts/run_reward.py`, console script `alignment-reward`) trains a sequence-classification reward
   model with TRL's `RewardTrainer` from a recipe and reports its held-out pairwise accuracy;
2. `annotate_main` (`scripts/annotate_margins.py`) scores every pair with it and writes `train.jsonl` / `test.jsonl`
   with a float `margin` = r(prompt + chosen) - r(prompt + rejected);
3. `dpo_main` with `loss_type: madpo` and `dataset_name: <that directory>` trains on the annotated pairs.

Loading a reward model and scoring pairs with it (on the token ids `RewardTrainer` trains on) is
`alignment.modeling.reward_model`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from ..data import TASK_SUITE, load_task_suite
from ..data.worked import with_worked_answers
from ..data_sources import load_source
from ..modeling.reward_model import (
    check_pair_columns,
    load_reward_model,
    load_reward_model_and_tokenizer,
    score_pairs,
)
from ..configs import AlignmentRewardConfig
from ..reward_merge import record_init_fingerprint
from ..trainers.reward import AlignmentRewardTrainer
from ..trainers.validation import check_finite_column
from .cli import run_recipe

logger = logging.getLogger("alignment")


def pairwise_summary(dataset, chosen: list[float], rejected: list[float]) -> dict[str, Any]:
    """Held-out pairwise accuracy (fraction with r(chosen) > r(rejected), ties count as wrong) and mean margin.

    Per `domain` when the dataset has one, and on the rows with `label_flipped` if present (there, agreeing with the
    corrupted label is the wrong call).
    """
    margins = [c - r for c, r in zip(chosen, rejected)]
    groups: dict[str, list[int]] = {"all": list(range(len(margins)))}
    if "domain" in dataset.column_names:
        for i, domain in enumerate(dataset["domain"]):
            groups.setdefault(str(domain), []).append(i)
    summary: dict[str, Any] = {"pairwise_accuracy": {}, "mean_margin": {}, "count": {}}
    for name, rows in groups.items():
        summary["pairwise_accuracy"][name] = sum(margins[i] > 0 for i in rows) / len(rows)
        summary["mean_margin"][name] = sum(margins[i] for i in rows) / len(rows)
        summary["count"][name] = len(rows)
    if "label_flipped" in dataset.column_names:
        flipped = [i for i, f in enumerate(dataset["label_flipped"]) if f]
        summary["flipped_count"] = len(flipped)
        if flipped:
            summary["flipped_agreement"] = sum(margins[i] > 0 for i in flipped) / len(flipped)
    return summary


# ------------------------------------------------------------------------------------------------- reward training


def _load_reward_model(*args):
    """`load_reward_model_and_tokenizer`, with the init's fingerprint recorded in the model's config: WARM
    (`alignment-warm`) refuses to average members whose recorded inits (SFT weights + `score` head) differ."""
    model, tokenizer, model_path = load_reward_model_and_tokenizer(*args)
    record_init_fingerprint(model)
    return model, tokenizer, model_path


def _check_reward_splits(train_dataset, eval_dataset) -> None:
    """Pairs in both splits, a finite `margin` if any, and a warning that TRL's loss uses that margin."""
    for name, dataset in (("train", train_dataset), ("test", eval_dataset)):
        if dataset is not None and hasattr(dataset, "column_names"):
            check_pair_columns(dataset, name)
            if "margin" in (dataset.column_names or []):  # TRL's RewardTrainer subtracts it inside the loss
                check_finite_column(dataset, name, "margin")
    if "margin" in (train_dataset.column_names or []):
        logger.warning("The training data has a `margin` column: TRL's RewardTrainer subtracts it inside the "
                       "Bradley-Terry loss (-log sigma(r_c - r_r - margin)). Drop the column if that is not intended.")


def _pairwise_accuracy(trainer, tokenizer, eval_dataset, training_args, results: dict) -> None:
    """Exact held-out pair counts into ``results`` (TRL's `eval_accuracy` averages per-batch means and drops pairs
    over `max_length`)."""
    scorer = trainer.accelerator.unwrap_model(trainer.model)
    chosen, rejected = score_pairs(scorer, tokenizer, eval_dataset, training_args.per_device_eval_batch_size,
                                   desc="Held-out pairwise accuracy")
    summary = pairwise_summary(eval_dataset, chosen, rejected)
    results["reward"] = summary
    results.setdefault("preference", {})["eval_pairwise_accuracy"] = summary["pairwise_accuracy"]["all"]
    results["preference"]["eval_mean_margin"] = summary["mean_margin"]["all"]
    print("Held-out pairwise accuracy (r(chosen) > r(rejected)): "
          + ", ".join(f"{d}={100 * a:.1f}%" for d, a in summary["pairwise_accuracy"].items()))


def reward_main(argv=None):
    """Train a Bradley-Terry reward model from a recipe (`AlignmentRewardConfig`: TRL's `RewardConfig` plus an
    optional `reward_invariance` penalty across domains; + `ModelConfig` + our script arguments).

    Data: any preference dataset (`prompt`/`chosen`/`rejected`), e.g. `dataset_name: task-suite` (with an optional
    `task_label_noise` tier on the train split). Saves the model and tokenizer to `output_dir`, and writes the
    held-out pairwise accuracy to `eval_results.json` (`preference.eval_pairwise_accuracy`, per domain under
    `reward.pairwise_accuracy`). Returns `(trainer, results)`. The shared recipe runner
    (`alignment.commands.cli.run_recipe`) does the rest, as for every other step.
    """
    return run_recipe(
        argv, AlignmentRewardConfig, AlignmentRewardTrainer, "preference",
        lambda args: f"reward ({args.reward_invariance})" if args.reward_invariance else "reward",
        eval_during_training_only=False,
        # Looked up per call, so a test can replace it on this module; the model first: its new `score` head is
        # drawn right after the seed is set.
        load_model=lambda *args: _load_reward_model(*args), model_before_data=True,
        check_splits=_check_reward_splits, answer_evaluation=False,  # a classifier does not generate answers
        evaluate_held_out=_pairwise_accuracy,
    )


# -------------------------------------------------------------------------------------------------- annotation


def _annotation_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="annotate_margins.py",
        description="Score preference pairs with a reward model and write train.jsonl/test.jsonl with a `margin` "
        "column (r(prompt+chosen) - r(prompt+rejected)), ready for `loss_type: madpo` via `dataset_name: <dir>`.",
    )
    parser.add_argument("--reward_model", required=True, help="reward model directory or Hub id (num_labels=1)")
    parser.add_argument("--dataset_name", default="task-suite",
                        help="`task-suite` (default), a local dataset directory/file, or a Hub id")
    parser.add_argument("--dataset_config", default=None, help="dataset configuration name (Hub datasets)")
    parser.add_argument("--splits", nargs="+", default=None,
                        help="splits to annotate (default: every split; for the task suite: train test)")
    parser.add_argument("--output_dir", required=True, help="directory for <split>.jsonl files")
    parser.add_argument("--task_domains", nargs="+", default=None, help="task suite: domains (default: all)")
    parser.add_argument("--train_limit_per_domain", type=int, default=None, help="task suite: train rows per domain")
    parser.add_argument("--test_limit_per_domain", type=int, default=None, help="task suite: test rows per domain")
    parser.add_argument("--task_label_noise", type=float, default=0.0,
                        help="task suite: label-noise tier of the train split (as in the recipes; test stays clean)")
    parser.add_argument("--noise_seed", type=int, default=0, help="task suite: seed of the label-flip draw")
    parser.add_argument("--task_answer_style", default="final", choices=["final", "worked"],
                        help="task suite: answers as bare numbers (`final`) or as the one-line calculation (`worked`), "
                        "as in the recipes' `task_answer_style`; use the style the policy trains on")
    parser.add_argument("--chat_template", default=None,
                        help="override the reward model's chat template (`chatml` or a file); default: its own")
    parser.add_argument("--batch_size", type=int, default=16, help="sequences per forward pass")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="scoring precision (default float32)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


def _load_annotation_data(args) -> dict:
    if args.dataset_name == TASK_SUITE:
        splits = args.splits or ["train", "test"]
        limits = {"train": args.train_limit_per_domain, "test": args.test_limit_per_domain}
        data = {
            split: load_task_suite(split, "preference", domains=args.task_domains, limit_per_domain=limits.get(split),
                                   label_noise=args.task_label_noise if split == "train" else 0.0,
                                   noise_seed=args.noise_seed)
            for split in splits
        }
        if args.task_answer_style == "worked":
            data = {split: dataset.map(with_worked_answers) for split, dataset in data.items()}
        return data
    if (args.task_domains or args.task_label_noise or args.train_limit_per_domain or args.test_limit_per_domain
            or args.task_answer_style != "final"):
        raise ValueError("--task_domains, --task_label_noise, --task_answer_style and --*_limit_per_domain only apply "
                         "to the task suite.")
    data = load_source(args.dataset_name, name=args.dataset_config)  # a Hub id, a directory, a file, save_to_disk
    splits = args.splits or list(data)
    missing = [s for s in splits if s not in data]
    if missing:
        raise ValueError(f"{args.dataset_name} has no split(s) {missing} (splits: {sorted(data)}).")
    return {split: data[split] for split in splits}


def _json_default(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON")


def annotate_main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI of `scripts/annotate_margins.py`. Returns the summary it writes to `<output_dir>/annotation.json`."""
    args = _annotation_parser().parse_args(argv)
    data = _load_annotation_data(args)
    for split, dataset in data.items():
        check_pair_columns(dataset, f"{split!r} split of the {args.dataset_name}")
    model, tokenizer = load_reward_model(args.reward_model, args.dtype, args.device, args.chat_template)

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"reward_model": args.reward_model, "dataset_name": args.dataset_name,
                               "task_label_noise": args.task_label_noise, "splits": {}}
    for split, dataset in data.items():
        chosen, rejected = score_pairs(model, tokenizer, dataset, args.batch_size, desc=f"Scoring {split}",
                                       show_progress=not args.no_progress)
        margins = [c - r for c, r in zip(chosen, rejected)]
        bad = [i for i, m in enumerate(margins) if not math.isfinite(m)]
        if bad:
            raise ValueError(f"Non-finite reward margin in {split} rows {bad[:10]}: check the reward model.")
        if "margin" in dataset.column_names:
            logger.warning("The %s split already has a `margin` column; it is replaced.", split)
            dataset = dataset.remove_columns("margin")
        path = out / f"{split}.jsonl"
        # json.dumps keeps every float exactly (pandas' `to_json` would round to 10 digits).
        with open(path, "w", encoding="utf-8") as f:
            for row, margin, r_c, r_r in zip(dataset, margins, chosen, rejected):
                record = {**row, "margin": margin, "reward_chosen": r_c, "reward_rejected": r_r}
                f.write(json.dumps(record, default=_json_default) + "\n")
        ordered = sorted(margins)
        quantiles = {f"q{q:02d}": ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
                     for q in (0, 10, 25, 50, 75, 90, 100)}
        summary["splits"][split] = {"path": str(path), **pairwise_summary(dataset, chosen, rejected),
                                    "margin_quantiles": quantiles}
        acc = summary["splits"][split]["pairwise_accuracy"]["all"]
        print(f"{split}: {len(dataset)} pairs, r(chosen) > r(rejected) on {100 * acc:.1f}%, written to {path}")
    # Not `<split>.json`: load_dataset(<dir>) reads only the files named after splits.
    (out / "annotation.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    annotate_main(argv)
