"""Seconds per training step: TRL's `RewardTrainer` vs our `AlignmentRewardTrainer` with a domain-invariance
objective (`reward_invariance`: `vrex`, `dial`).

    python benchmarks/reward_step.py --model tiny
    python benchmarks/reward_step.py --model tiny --objectives vrex,dial --out benchmarks/results/reward-step-tiny.json

As `kto_step.py` does for KTO: one process, the same checkpoint and data (the arithmetic pairs of
`benchmarks/workloads.py` with a `domain` column alternating `a`/`b`; `dial` takes `b` as its unlabelled target), TRL
run first and again after each of our runs, each of ours compared with the mean of the TRL runs just before and after
it (`benchmarks/timing.py`). TRL's trainer has no objective, so the ratio is the whole cost of ours: for `vrex` a few
tensor ops on the batch's rewards, for `dial` the hidden states kept from the forward, the critic's
`critic_iterations` Adam steps with their double-backward gradient penalty, and the critic's forward on the
embeddings. Timing and memory: `StepTimer` (one optimiser step of the real `trainer.train()` loop).
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="`tiny` (random tiny Llama), a path, or an embedded alias")
    parser.add_argument("--objectives", default="vrex,dial", help="comma-separated `reward_invariance` names")
    parser.add_argument("--steps", type=int, default=8, help="measured optimiser steps per run (default 8)")
    parser.add_argument("--warmup", type=int, default=3, help="discarded steps before them (default 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each objective (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads (default 1)")
    parser.add_argument("--out", default=None, help="also write the results as JSON to this file")
    return parser.parse_args(argv)


ARGS = parse_args()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.process_setup import prepare_process  # noqa: E402  (imports no torch)

prepare_process(ARGS.threads)  # before torch is imported

import json  # noqa: E402
import tempfile  # noqa: E402

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import RewardTrainer  # noqa: E402

from alignment.configs import AlignmentRewardConfig  # noqa: E402
from alignment.reward_objectives import REWARD_INVARIANCE  # noqa: E402
from alignment.trainers.reward import AlignmentRewardTrainer  # noqa: E402
from benchmarks.timing import (  # noqa: E402  (after OMP_NUM_THREADS is set: it imports torch)
    CUDA, StepTimer, close_sampler, fmt_mem, memory_note, neighbour_mean, spread, summarize)
from benchmarks.workloads import make_pairs, model_path  # noqa: E402

torch.set_num_threads(ARGS.threads)
hf_logging.set_verbosity_error()
KWARGS = {"vrex": {"penalty_weight": 1.0}, "dial": {"target_domains": ["b"]}}


def run_once(objective: str | None, path: str, data, tmp: str) -> dict:
    """Train `warmup + steps` steps with TRL's RewardTrainer (`objective=None`) or ours with `objective`."""
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    args = AlignmentRewardConfig(
        output_dir=os.path.join(tmp, "out"), per_device_train_batch_size=ARGS.batch_size,
        max_steps=ARGS.warmup + ARGS.steps, learning_rate=1e-5, max_length=256, report_to="none",
        save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=0, use_cpu=not CUDA, bf16=False,
        gradient_checkpointing=False, dataloader_drop_last=True, reward_invariance=objective,
        reward_invariance_kwargs=KWARGS.get(objective) if objective else None)
    trainer_cls = RewardTrainer if objective is None else AlignmentRewardTrainer
    trainer = trainer_cls(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    timer = StepTimer(ARGS.warmup)
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    result = {"trainer": "TRL RewardTrainer" if objective is None else "AlignmentRewardTrainer",
              "objective": objective or "-", **summarize(timer.durations[ARGS.warmup:]), **timer.memory()}
    del trainer, model
    return result


def main() -> None:
    objectives = [n.strip() for n in ARGS.objectives.split(",") if n.strip()]
    for name in objectives:
        REWARD_INVARIANCE.get(name)  # unknown name -> error listing the valid ones, before anything runs
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(ARGS.model, tmp)
        pairs = make_pairs(ARGS.batch_size * (ARGS.warmup + ARGS.steps), loss_columns=False)
        data = pairs.add_column("domain", ["a" if i % 2 == 0 else "b" for i in range(len(pairs))])
        print(f"model={ARGS.model} steps={ARGS.steps} warmup={ARGS.warmup} batch={ARGS.batch_size} "
              f"threads={ARGS.threads} device={'cuda' if CUDA else 'cpu'}", flush=True)
        for objective in objectives:
            runs.append({**run_once(None, path, data, tmp), "order": len(runs), "for": objective})
            for _ in range(ARGS.repeats):
                runs.append({**run_once(objective, path, data, tmp), "order": len(runs)})
                runs.append({**run_once(None, path, data, tmp), "order": len(runs), "for": objective})

    def is_trl(row):
        return row["trainer"] == "TRL RewardTrainer"

    for row in runs:
        if not is_trl(row):
            row["trl_median_s"] = neighbour_mean(runs, row, is_trl)
            row["ratio"] = row["median_s"] / row["trl_median_s"]
    spreads = {o: spread([r["median_s"] for r in runs if is_trl(r) and r["for"] == o]) for o in objectives}
    print(f"\n{'trainer':24s} {'objective':10s} {'median s/step':>13s} {'min-max':>17s} {'vs TRL':>7s} mem")
    for row in runs:
        ratio = f"{row['ratio']:.3f}x" if "ratio" in row else "-"
        print(f"{row['trainer']:24s} {row['objective']:10s} {row['median_s']:13.4f} "
              f"{row['min_s']:8.4f}-{row['max_s']:<8.4f} {ratio:>7s} {fmt_mem(row)}")
    for objective, trl in spreads.items():
        ours = [r["ratio"] for r in runs if not is_trl(r) and r["objective"] == objective]
        print(f"{objective}: TRL spread over {trl['runs']} runs {trl['min']:.4f} - {trl['max']:.4f} s/step "
              f"({trl['pct']:.1f}% of the median); ours vs TRL, mean of {len(ours)}: {sum(ours) / len(ours):.3f}x")
    print(memory_note())
    if ARGS.out:
        with open(ARGS.out, "w") as f:
            json.dump({"args": vars(ARGS), "trl_spread_pct": {k: v["pct"] for k, v in spreads.items()},
                       "runs": runs}, f, indent=2)
        print(f"wrote {ARGS.out}")
    close_sampler()


if __name__ == "__main__":
    main()
