"""Per-epoch cost of the reference model: TRL's `DPOTrainer` (recomputes it every step) vs our `PreferenceTrainer`
with `reference_cache_dir` on a first run (builds the cache, then trains) and a second run (reads it).

    python benchmarks/ref_cache.py --model tiny --out benchmarks/ref_cache-tiny.json
    python benchmarks/ref_cache.py --model smollm2-135m-instruct --pairs 16 --repeats 1 \
        --out benchmarks/ref_cache-smollm2.json

Everything runs in ONE process on the same checkpoint and the same data (same rows, order, seed, batch, loss
`sigmoid`, beta 0.1). Each repeat runs, in this order: TRL, ours first run (a fresh, empty cache directory), ours
second run (the cache the first run wrote); the table gives the median over repeats and the TRL min-max (machine
drift). Per run:

- `init s`: constructing the trainer. TRL loads a second copy of the model as reference; ours-first tokenizes, hashes
  the reference weights and the data and computes the reference log-probs of every row (the cache build); ours-second
  hashes weights and data and reads the cache.
- `epoch s`: `trainer.train()` over one epoch (every optimiser step, plus dataloading and logging, which are the
  same in all three); `tokens/s`: non-padding tokens of policy inputs (chosen + rejected) per epoch second.
- `total s` = init + epoch: what a user waits for.
- memory: peak live heap (glibc `mallinfo2`: malloc'd bytes in use, incl. mmap'd tensor blocks) over the run, minus
  its level before the model was loaded -- so the reference model TRL holds is counted; and the process's peak RSS
  (absolute). The live heap misses weights `from_pretrained` memory-maps from safetensors files (TRL's reference
  model among them); peak RSS sees them (it can fall between runs when freed memory goes back to the OS). On a GPU:
  `torch.cuda.max_memory_allocated`.

Goal (issue 6): second run >= 1.3x faster per epoch than TRL (`TRL epoch / ours-2nd epoch`).
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="tiny", help="`tiny`, an embedded alias (`smollm2-135m-instruct`) or a path")
    parser.add_argument("--pairs", type=int, default=64, help="training pairs = one epoch (default 64)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step (default 4)")
    parser.add_argument("--max-length", type=int, default=256, help="max prompt+completion tokens (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="TRL / ours-1st / ours-2nd rounds (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads (default 1)")
    parser.add_argument("--lora", action="store_true",
                        help="LoRA (r 8, all linear layers) in every run: TRL's reference is then the policy with "
                             "adapters disabled (no second model), ours-2nd still reads the cache")
    parser.add_argument("--out", default=None, help="also write the results as JSON to this file")
    return parser.parse_args(argv)


ARGS = parse_args()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.process_setup import prepare_process  # noqa: E402  (imports no torch)

prepare_process(ARGS.threads)  # before torch is imported

import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from alignment.configs import PreferenceConfig  # noqa: E402
from alignment.trainers import PreferenceTrainer  # noqa: E402
from benchmarks.timing import CUDA, close_sampler, start_memory_window, stop_memory_window  # noqa: E402
from benchmarks.workloads import make_pairs, model_path  # noqa: E402

torch.set_num_threads(ARGS.threads)
hf_logging.set_verbosity_error()


def run_once(kind: str, path: str, data: Dataset, tmp: str, cache_dir: str | None) -> dict:
    common = dict(
        output_dir=os.path.join(tmp, "out"), per_device_train_batch_size=ARGS.batch_size, num_train_epochs=1,
        learning_rate=1e-4 if ARGS.lora else 1e-6, max_length=ARGS.max_length, report_to="none", save_strategy="no",
        logging_steps=10_000, disable_tqdm=True, seed=0, use_cpu=not CUDA, bf16=False, gradient_checkpointing=False,
        dataloader_drop_last=True, loss_type=["sigmoid"], beta=0.1,
    )
    base = start_memory_window()
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    peft = {"peft_config": LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")} if ARGS.lora else {}
    if kind == "trl":
        trainer = DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=data, processing_class=tokenizer,
                             **peft)
    else:
        trainer = PreferenceTrainer(model=model, args=PreferenceConfig(reference_cache_dir=cache_dir, **common),
                                    train_dataset=data, processing_class=tokenizer, **peft)
    trainer.remove_callback(PrinterCallback)
    init_s = time.perf_counter() - start
    start = time.perf_counter()
    trainer.train()
    if CUDA:
        torch.cuda.synchronize()
    epoch_s = time.perf_counter() - start
    memory = stop_memory_window(base)
    tokens = trainer._total_train_tokens
    result = {
        "run": {"trl": "TRL DPOTrainer", "first": "ours, 1st run (build)", "second": "ours, 2nd run (cache hit)"}[kind],
        "kind": kind, "init_s": init_s, "epoch_s": epoch_s, "total_s": init_s + epoch_s, "tokens": tokens,
        "tokens_per_s": tokens / epoch_s, "steps": trainer.state.global_step, **memory,
        "reference_model_loaded": getattr(trainer, "ref_model", None) is not None,
    }
    if kind != "trl":
        result["cache"] = trainer.reference_cache_report
    del trainer, model
    gc.collect()
    return result


def main() -> None:
    load = os.getloadavg()
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{'CUDA ' + torch.cuda.get_device_name() if CUDA else 'CPU'}, {ARGS.threads} thread(s), "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(ARGS.model, tmp)
        data = make_pairs(ARGS.pairs, loss_columns=False)
        for repeat in range(ARGS.repeats):
            cache_dir = os.path.join(tmp, f"cache-{repeat}")  # empty: the first run builds it
            for kind in ("trl", "first", "second"):
                row = run_once(kind, path, data, tmp, None if kind == "trl" else cache_dir)
                row["repeat"] = repeat
                runs.append(row)
                print(f"  repeat {repeat} {row['run']:<26} init {row['init_s']:7.2f}s epoch {row['epoch_s']:7.2f}s "
                      f"({row['steps']} steps, {row['tokens_per_s']:8.0f} tok/s) mem +{row['mem_growth_mib']:.0f} MiB",
                      flush=True)
        assert all(r["cache"][0]["built"] for r in runs if r["kind"] == "first")
        assert not any(r["cache"][0]["built"] or r["reference_model_loaded"] for r in runs if r["kind"] == "second")

    summary = {}
    for kind in ("trl", "first", "second"):
        rows = [r for r in runs if r["kind"] == kind]
        summary[kind] = {key: statistics.median(r[key] for r in rows)
                         for key in ("init_s", "epoch_s", "total_s", "tokens_per_s", "mem_growth_mib", "peak_rss_mib")}
        summary[kind]["epoch_min_max"] = [min(r["epoch_s"] for r in rows), max(r["epoch_s"] for r in rows)]
    trl = summary["trl"]
    ratios = {
        "epoch_trl_over_second": trl["epoch_s"] / summary["second"]["epoch_s"],
        "epoch_trl_over_first": trl["epoch_s"] / summary["first"]["epoch_s"],
        "total_trl_over_first": trl["total_s"] / summary["first"]["total_s"],
        "total_trl_over_second": trl["total_s"] / summary["second"]["total_s"],
    }
    lora = " + LoRA r 8" if ARGS.lora else ""
    print(f"\nmodel {ARGS.model}{lora}, {ARGS.pairs} pairs, batch {ARGS.batch_size}, max length {ARGS.max_length}, "
          f"medians of {ARGS.repeats} repeat(s); TRL epoch min-max {trl['epoch_min_max'][0]:.2f}-{trl['epoch_min_max'][1]:.2f} s")
    print("| run | init s | epoch s | total s | tokens/s | epoch speed-up vs TRL | mem +MiB | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    names = {"trl": "TRL DPOTrainer (reference recomputed)", "first": "ours, 1st run (build cache + train)",
             "second": "ours, 2nd run (cache hit, no reference)"}
    for kind, row in summary.items():
        print(f"| {names[kind]} | {row['init_s']:.2f} | {row['epoch_s']:.2f} | {row['total_s']:.2f} | "
              f"{row['tokens_per_s']:.0f} | {trl['epoch_s'] / row['epoch_s']:.2f}x | {row['mem_growth_mib']:.0f} | "
              f"{row['peak_rss_mib']:.0f} |")
    goal = ratios["epoch_trl_over_second"]
    print(f"\nGoal: 2nd run >= 1.3x faster per epoch than TRL: {goal:.2f}x -> {'met' if goal >= 1.3 else 'NOT met'}")
    if ARGS.out:
        with open(ARGS.out, "w") as f:
            json.dump({"args": vars(ARGS), "load_average": load, "summary": summary, "ratios": ratios, "runs": runs},
                      f, indent=2)
        print(f"written to {ARGS.out}")
    close_sampler()


if __name__ == "__main__":
    main()
