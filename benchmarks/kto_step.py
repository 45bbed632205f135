"""Seconds per training step: TRL's `KTOTrainer` vs our `KTOAlignmentTrainer` (the unpaired-loss registry).

    python benchmarks/kto_step.py --model tiny
    python benchmarks/kto_step.py --model tiny --losses kto,apo_zero_unpaired --out benchmarks/results/kto-step-tiny.json

As `preference_step.py` does for DPO: one process, the same checkpoint and data (the arithmetic pairs of
`benchmarks/workloads.py`, unpaired by `alignment.data_layouts.unpaired_split`: TRL's `unpair_preference_dataset`, then
a seeded shuffle), TRL run first and again after each of our runs, each of ours compared with the mean of the TRL runs
just before and after it (`benchmarks/timing.py`). TRL runs with the same `loss_type` as ours, so the ratio is the cost
of our trainer's path (the registry call in `_compute_loss`; TRL's forwards, KL estimate and metrics are TRL's own).
Timing and memory: `StepTimer`, as in `preference_step.py` (one optimiser step of the real `trainer.train()` loop).
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="`tiny` (random tiny Llama), a path, or an embedded alias")
    parser.add_argument("--losses", default="kto", help="comma-separated unpaired losses (default: kto)")
    parser.add_argument("--steps", type=int, default=8, help="measured optimiser steps per run (default 8)")
    parser.add_argument("--warmup", type=int, default=3, help="discarded steps before them (default 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="completions per step (default 8; KTO needs > 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each of our losses (default 3)")
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
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import KTOConfig, KTOTrainer  # noqa: E402

from alignment.configs import KTOAlignmentConfig  # noqa: E402
from alignment.data_layouts import unpaired_split  # noqa: E402
from alignment.trainers.kto import KTOAlignmentTrainer  # noqa: E402
from alignment.unpaired import UNPAIRED_LOSSES  # noqa: E402
from benchmarks.timing import (  # noqa: E402  (after OMP_NUM_THREADS is set: it imports torch)
    CUDA, StepTimer, close_sampler, fmt_mem, memory_note, neighbour_mean, spread, summarize)
from benchmarks.workloads import make_pairs, model_path  # noqa: E402

torch.set_num_threads(ARGS.threads)
hf_logging.set_verbosity_error()


def run_once(kind: str, loss: str, path: str, data, tmp: str) -> dict:
    """Train `warmup + steps` steps with TRL's KTOTrainer (`kind="trl"`) or ours, both with `loss_type=loss`."""
    common = dict(
        output_dir=os.path.join(tmp, "out"), per_device_train_batch_size=ARGS.batch_size,
        max_steps=ARGS.warmup + ARGS.steps, learning_rate=1e-6, max_length=256, report_to="none",
        save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=0, use_cpu=not CUDA, bf16=False,
        gradient_checkpointing=False, dataloader_drop_last=True, beta=0.1, loss_type=loss,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    trainer_cls, config_cls = (KTOTrainer, KTOConfig) if kind == "trl" else (KTOAlignmentTrainer, KTOAlignmentConfig)
    trainer = trainer_cls(model=model, args=config_cls(**common), train_dataset=data, processing_class=tokenizer)
    timer = StepTimer(ARGS.warmup)
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    result = {"trainer": "TRL KTOTrainer" if kind == "trl" else "KTOAlignmentTrainer", "loss": loss,
              **summarize(timer.durations[ARGS.warmup:]), **timer.memory()}
    del trainer, model
    return result


def main() -> None:
    losses = [n.strip() for n in ARGS.losses.split(",") if n.strip()]
    for name in losses:
        UNPAIRED_LOSSES.get(name)  # unknown name -> error listing the valid ones, before anything runs
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(ARGS.model, tmp)
        pairs = make_pairs(ARGS.batch_size * (ARGS.warmup + ARGS.steps), loss_columns=False)
        data = unpaired_split(pairs)
        print(f"model={ARGS.model} steps={ARGS.steps} warmup={ARGS.warmup} batch={ARGS.batch_size} "
              f"threads={ARGS.threads} device={'cuda' if CUDA else 'cpu'}", flush=True)
        for loss in losses:
            runs.append({**run_once("trl", loss, path, data, tmp), "order": len(runs)})
            for _ in range(ARGS.repeats):
                runs.append({**run_once("ours", loss, path, data, tmp), "order": len(runs)})
                runs.append({**run_once("trl", loss, path, data, tmp), "order": len(runs)})

    def is_trl(row):
        return row["trainer"] == "TRL KTOTrainer"

    for row in runs:
        if not is_trl(row):
            row["trl_median_s"] = neighbour_mean(runs, row, is_trl)
            row["ratio"] = row["median_s"] / row["trl_median_s"]
    spreads = {loss: spread([r["median_s"] for r in runs if is_trl(r) and r["loss"] == loss]) for loss in losses}
    print(f"\n{'trainer':20s} {'loss':18s} {'median s/step':>13s} {'min-max':>17s} {'vs TRL':>7s} mem")
    for row in runs:
        ratio = f"{row['ratio']:.3f}x" if "ratio" in row else "-"
        print(f"{row['trainer']:20s} {row['loss']:18s} {row['median_s']:13.4f} "
              f"{row['min_s']:8.4f}-{row['max_s']:<8.4f} {ratio:>7s} {fmt_mem(row)}")
    for loss, trl in spreads.items():
        ours = [r["ratio"] for r in runs if not is_trl(r) and r["loss"] == loss]
        print(f"{loss}: TRL spread over {trl['runs']} runs {trl['min']:.4f} - {trl['max']:.4f} s/step "
              f"({trl['pct']:.1f}% of the median); ours vs TRL, mean of {len(ours)}: {sum(ours) / len(ours):.3f}x")
    print(memory_note())
    if ARGS.out:
        with open(ARGS.out, "w") as f:
            json.dump({"args": vars(ARGS), "trl_spread_pct": {k: v["pct"] for k, v in spreads.items()}, "runs": runs}, f, indent=2)
        print(f"wrote {ARGS.out}")
    close_sampler()


if __name__ == "__main__":
    main()
