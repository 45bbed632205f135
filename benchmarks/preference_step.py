"""Seconds per training step and peak memory: TRL's `DPOTrainer` (sigmoid) vs our `PreferenceTrainer`, every loss.

    python benchmarks/preference_step.py --model tiny
    python benchmarks/preference_step.py --model smollm2-135m-instruct --steps 5 --warmup 2 --batch-size 4 \
        --out benchmarks/results-smollm2.json

Everything runs in ONE process, on the same model checkpoint and the same data (same rows, same order, same seed):
TRL's trainer is run first and again after every ``--trl-every`` of our losses (default: strictly alternating TRL,
ours, TRL, ours, ...), so drift of the machine (thermal, other jobs on a shared CPU) shows up as a spread of the TRL
numbers, and each of our runs is compared with the mean of the TRL runs just before and just after it.

How a step is timed: a `TrainerCallback` records `time.perf_counter()` at `on_step_begin` and `on_step_end` while
`trainer.train()` runs with `max_steps = warmup + steps`. That window is exactly one optimiser step of the real
training loop -- forward + backward of policy and reference, the loss, our metric bookkeeping, gradient clipping,
`optimizer.step()`, the scheduler and `zero_grad` -- and excludes what is not per-step cost of the trainer (fetching
the batch from the dataloader, which happens before `on_step_begin`; logging and saving, which happen after
`on_step_end`). Timing `training_step` directly would miss the optimiser step, and monkeypatching it would time a
different code path from the one users run. The first ``--warmup`` steps are discarded (allocator warm-up, lazy
initialisation); the median of the next ``--steps`` is reported with its min-max.

Memory: on a GPU, `torch.cuda.max_memory_allocated()` over the measured steps (reset after warm-up), minus what was
allocated before them. On CPU a background thread samples, every millisecond, (a) the process RSS (`psutil`) and
(b) glibc's live heap bytes (`mallinfo2`: bytes in use, including large mmap'd tensor blocks). RSS only grows in a
long-lived process -- freed memory stays cached by the allocator, so later runs look free -- so the main CPU figure
is the peak growth of *live* heap during the measured steps over its level at the first measured step; the absolute
peak RSS is printed too. `resource.getrusage` (lifetime peak) and `tracemalloc` (Python objects only, not torch
tensors) cannot measure this.

The timer, the memory sampler and the statistics are shared with `grpo_step.py`: see `benchmarks/timing.py`.

Padding-free: ``--padding-free`` adds a run of our `sigmoid` with ``padding_free=True`` (the batch's real tokens packed
into one row, `alignment.packing`), after the losses and compared with its TRL neighbours like the others; compare it
with the padded `sigmoid` row. ``--workload wide`` replaces the arithmetic pairs (completions 35-78 tokens on the tiny
tokenizer: little padding) with pairs whose completions are drawn uniformly from 20..240 tokens (``--wide-min``,
``--wide-max``). Every run reports `real_fraction`, the share of real (non-pad) tokens in the padded batches it saw:
what packing can save.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="tiny",
                        help="`tiny` (random 2-layer Llama from alignment.testing), an embedded alias such as "
                             "`smollm2-135m-instruct`, or a checkpoint path")
    parser.add_argument("--steps", type=int, default=10, help="measured optimiser steps per run (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="discarded steps before them (default 3)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step (default 4)")
    parser.add_argument("--max-length", type=int, default=256, help="max prompt+completion tokens (default 256)")
    parser.add_argument("--losses", default="all",
                        help="comma-separated registered loss names, or `all` (default; `_test*` names skipped)")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads (default 1)")
    parser.add_argument("--trl-every", type=int, default=1,
                        help="re-run TRL after every N of our losses (default 1: TRL, ours, TRL, ours, ..., TRL)")
    parser.add_argument("--padding-free", action="store_true",
                        help="also run our sigmoid with padding_free=True (packed sequences), row `sigmoid` / packed")
    parser.add_argument("--workload", choices=("pairs", "wide"), default="pairs",
                        help="`pairs`: arithmetic pairs (benchmarks/workloads.py, similar lengths; default); `wide`: "
                             "completions of uniformly random length in [--wide-min, --wide-max] tokens")
    parser.add_argument("--wide-min", type=int, default=20, help="shortest completion of --workload wide (tokens)")
    parser.add_argument("--wide-max", type=int, default=240, help="longest completion of --workload wide (tokens)")
    parser.add_argument("--out", default=None, help="also write the results as JSON to this file")
    return parser.parse_args(argv)


ARGS = parse_args()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.process_setup import prepare_process  # noqa: E402  (imports no torch)

prepare_process(ARGS.threads)  # before torch is imported

import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from alignment.configs import PreferenceConfig  # noqa: E402
from alignment.losses import get_preference_loss, list_preference_losses  # noqa: E402
from alignment.trainers import PreferenceTrainer  # noqa: E402
from benchmarks.timing import (  # noqa: E402  (after OMP_NUM_THREADS is set: it imports torch)
    CUDA, StepTimer, close_sampler, fmt_mem, memory_note, neighbour_mean, spread, summarize)
from benchmarks.workloads import make_pairs, model_path  # noqa: E402

torch.set_num_threads(ARGS.threads)
hf_logging.set_verbosity_error()


# ----------------------------------------------------------------------------- data and model
_FILLER = ("the answer is", "apples", "and", "oranges", "left", "total", "count", "more", "gives away", "buys")


def _text_of_tokens(tokenizer, n_tokens: int, offset: int) -> str:
    """Words of the tiny corpus, appended until the text is `n_tokens` tokens long (tokenizer-exact, +-1 word)."""
    words: list[str] = []
    while len(tokenizer(" ".join(words))["input_ids"]) < n_tokens:
        words.append(_FILLER[(offset + len(words)) % len(_FILLER)])
    return " ".join(words)


def wide_pairs(n: int, tokenizer, low: int, high: int) -> Dataset:
    """`make_pairs(n)`'s extra columns with a short prompt and chosen/rejected completions of independent, uniformly
    random lengths in [low, high] tokens (seeded): a batch mixes short and long sequences."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(low, high + 1, (n, 2), generator=generator).tolist()
    base = make_pairs(n)

    def widen(row, i):
        # a short prompt (~25 tokens), so that the completion drives the length and max_length truncates little
        row["prompt"] = [{"role": "user", "content": f"Count the {_FILLER[1 + i % 3]}."}]
        row["chosen"] = [{"role": "assistant", "content": _text_of_tokens(tokenizer, lengths[i][0], i)}]
        row["rejected"] = [{"role": "assistant", "content": _text_of_tokens(tokenizer, lengths[i][1], i + 3)}]
        return row

    return base.map(widen, with_indices=True)


class RealTokenCounter:
    """Wraps a collator; counts real (attention-mask) and padded tokens of every batch it builds."""

    def __init__(self, base):
        self.base, self.real, self.total = base, 0, 0

    def __call__(self, examples):
        batch = self.base(examples)
        self.real += int(batch["attention_mask"].sum())
        self.total += batch["attention_mask"].numel()
        return batch


def run_once(kind: str, loss: str, path: str, data: Dataset, tmp: str, padding_free: bool = False) -> dict:
    """Train `warmup + steps` steps with TRL (`kind="trl"`) or ours with `loss`; return timings and memory."""
    common = dict(
        output_dir=os.path.join(tmp, "out"), per_device_train_batch_size=ARGS.batch_size,
        max_steps=ARGS.warmup + ARGS.steps, learning_rate=1e-6, max_length=ARGS.max_length, report_to="none",
        save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=0, use_cpu=not CUDA, bf16=False,
        gradient_checkpointing=False, dataloader_drop_last=True,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if kind == "trl":
        trainer = DPOTrainer(model=model, args=DPOConfig(loss_type=["sigmoid"], beta=0.1, **common),
                             train_dataset=data.remove_columns(["margin", "empty_trace", "preference_prob"]),
                             processing_class=tokenizer)
    else:
        trainer = PreferenceTrainer(model=model, args=PreferenceConfig(loss_type=[loss], beta=0.1,
                                                                       padding_free=padding_free, **common),
                                    train_dataset=data, processing_class=tokenizer)
    counter = trainer.data_collator = RealTokenCounter(trainer.data_collator)
    timer = StepTimer(ARGS.warmup)
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)  # no end-of-run metrics dump in the table
    trainer.train()
    measured = timer.durations[ARGS.warmup:]
    result = {
        "trainer": "TRL DPOTrainer" if kind == "trl" else "PreferenceTrainer", "loss": loss,
        "padding_free": padding_free, "real_fraction": counter.real / max(counter.total, 1),
        **summarize(measured), **timer.memory(),
    }
    del trainer, model
    return result


def main() -> None:
    losses = [n for n in list_preference_losses() if not n.startswith("_test")] if ARGS.losses == "all" \
        else [n.strip() for n in ARGS.losses.split(",") if n.strip()]
    for name in losses:
        get_preference_loss(name)  # unknown name -> error listing the valid ones, before anything runs
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(ARGS.model, tmp)
        n_rows = ARGS.batch_size * (ARGS.warmup + ARGS.steps)
        data = make_pairs(n_rows) if ARGS.workload == "pairs" else \
            wide_pairs(n_rows, AutoTokenizer.from_pretrained(path), ARGS.wide_min, ARGS.wide_max)
        runs: list[dict] = []

        def run(kind, loss, padding_free=False):
            row = run_once(kind, loss, path, data, tmp, padding_free)
            row["order"] = len(runs)
            runs.append(row)
            print(f"  [{row['order']:2d}] {row['trainer']:17s} {_label(row):9s} median {row['median_s']:.4f} s "
                  f"(min {row['min_s']:.4f}, max {row['max_s']:.4f}) real tokens {row['real_fraction']:.0%}",
                  flush=True)

        print(f"model={ARGS.model} steps={ARGS.steps} warmup={ARGS.warmup} batch={ARGS.batch_size} "
              f"max_length={ARGS.max_length} threads={ARGS.threads} workload={ARGS.workload} "
              f"device={'cuda' if CUDA else 'cpu'}", flush=True)
        run("trl", "sigmoid")
        for i, loss in enumerate(losses):
            run("ours", loss)
            if (i + 1) % ARGS.trl_every == 0 or i == len(losses) - 1:
                run("trl", "sigmoid")
        if ARGS.padding_free:
            run("ours", "sigmoid", padding_free=True)
            run("trl", "sigmoid")

    def is_trl(r):
        return r["trainer"] == "TRL DPOTrainer"

    for row in runs:
        if is_trl(row):
            continue
        row["trl_median_s"] = neighbour_mean(runs, row, is_trl)
        row["ratio"] = row["median_s"] / row["trl_median_s"]
        if row["padding_free"]:  # an opt-in, judged against the padded sigmoid row, not against a goal
            continue
        row["goal"] = 1.02 if row["loss"] == "sigmoid" else 1.05
        row["meets_goal"] = row["ratio"] <= row["goal"]
    trl = spread([r["median_s"] for r in runs if is_trl(r)])
    trl_spread = {"trl_runs": trl["runs"], "trl_median_min_s": trl["min"], "trl_median_max_s": trl["max"],
                  "trl_spread_pct": trl["pct"]}

    mem_header = "peak RSS MiB" if not CUDA else "peak alloc MiB"
    print()
    print(f"{'trainer':17s} {'loss':9s} {'median s/step':>13s} {'min-max':>17s} {'vs TRL':>7s} {'goal':>6s} "
          f"{'mem +MiB':>8s} {mem_header:>9s}")
    for row in runs:
        ratio = f"{row['ratio']:.3f}x" if "ratio" in row else "-"
        goal = ("ok" if row["meets_goal"] else "MISS") if "meets_goal" in row else ""
        print(f"{row['trainer']:17s} {_label(row):9s} {row['median_s']:13.4f} "
              f"{row['min_s']:8.4f}-{row['max_s']:<8.4f} {ratio:>7s} {goal:>6s} {fmt_mem(row)}")
    print(f"\nTRL spread over {trl['runs']} runs: median s/step {trl['min']:.4f} - "
          f"{trl['max']:.4f} ({trl['pct']:.1f}% of the median). Ratios compare each "
          "run with the mean of the TRL runs just before and after it.")
    packed = [r for r in runs if r["padding_free"]]
    padded = [r for r in runs if not is_trl(r) and r["loss"] == "sigmoid" and not r["padding_free"]]
    if packed and padded:
        print(f"padding_free vs padded sigmoid: {packed[0]['median_s'] / padded[0]['median_s']:.3f}x time "
              f"({packed[0]['ratio']:.3f}x vs {padded[0]['ratio']:.3f}x TRL); real tokens "
              f"{packed[0]['real_fraction']:.0%} of the padded batches")
    print(memory_note())

    if ARGS.out:
        meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
                "cpu_count": os.cpu_count(), "torch": torch.__version__, "device": "cuda" if CUDA else "cpu",
                "gpu": torch.cuda.get_device_name() if CUDA else None, **vars(ARGS)}
        with open(ARGS.out, "w") as f:
            json.dump({"meta": meta, "spread": trl_spread, "runs": runs}, f, indent=2)
        print(f"wrote {ARGS.out}")
    close_sampler()


def _label(row: dict) -> str:
    return f"{row['loss']}/packed" if row.get("padding_free") else row["loss"]


if __name__ == "__main__":
    main()
