"""Seconds per optimiser step and generation share: TRL's `GRPOTrainer` vs our `GroupRLTrainer`, per advantage
estimator and custom surrogate switch.

    python benchmarks/grpo_step.py --model tiny --out benchmarks/grpo-step-tiny.json
    python benchmarks/grpo_step.py --model tiny --variants grpo,hapo --steps 3 --warmup 1

Everything runs in ONE process, on the same checkpoint, prompts, reward function, seed and TRL options (loss type,
clipping, beta, group size, completion length); only the advantage estimator / surrogate switches of our runs differ.
TRL (its default group-normalised advantages, `scale_rewards="group"`) runs first and again after every
``--trl-every`` of our variants, and each of our runs is compared with the mean of the TRL runs just before and after
it (`benchmarks/timing.py`: `neighbour_mean`), so drift of a shared machine shows up as the spread of the TRL runs.

Variants (ours): the estimators `grpo`, `dr_grpo`, `ngrpo`, `rloo`, `drpo` on TRL's own surrogate, then
`clip_by_advantage_sign` (`policy_loss: sign_clipped`, `grpo` advantages) and `hapo` (`policy_loss: hapo`: HAPO's
adaptive clipping and advantage redistribution, with the `hapo` estimator): the two that replace TRL's surrogate with
a policy loss from `alignment.policy_losses` (variant names kept from before the registry, for the stored results);
`apa` runs APA's policy loss (`policy_loss: apa`) on `grpo` advantages.
The clip range is the same for every run (``--epsilon`` both sides), not the papers' recipes (NGRPO 0.16 / 0.24
etc.): this measures the cost of the code paths, not the methods' training.

What is timed (`StepTimer`): `on_step_begin` -> `on_step_end` of the real `trainer.train()` loop, i.e. one optimiser
step: with `steps_per_generation = gradient_accumulation_steps = 1` (as here) every step generates its rollouts,
scores them, computes the advantages and runs forward/backward, clipping and `optimizer.step()`. Generation share:
the trainer's `_generate` (prompt tokenisation, `model.generate` / `_generate_single_turn`, decoding; both trainers
inherit TRL's) is wrapped on each trainer *instance* by the same timer (`StepTimer.time_method`), and its time inside
the measured steps is divided by their total time. `rest median` is the median per step of step time minus
generation time: the part our code can change (rewards, advantages, loss, backward, optimiser). The first
``--warmup`` steps are discarded; the median and min-max of the next ``--steps`` are reported. Sampling is seeded
identically, so on the same checkpoint both trainers generate the same completions (`completion tokens` column).

Memory: as in `preference_step.py` (see `benchmarks/timing.py`): peak CUDA allocation over the measured steps, or on
CPU the peak growth of glibc's live heap during them plus the absolute peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sys

# Our variants: name -> the GroupRLConfig fields that define it (everything else is shared with TRL's run).
VARIANTS: dict[str, dict] = {
    "grpo": {"advantage_estimator": "grpo"},
    "dr_grpo": {"advantage_estimator": "dr_grpo"},
    "ngrpo": {"advantage_estimator": "ngrpo"},
    "rloo": {"advantage_estimator": "rloo"},
    "drpo": {"advantage_estimator": "drpo"},
    "clip_by_advantage_sign": {"advantage_estimator": "grpo", "policy_loss": "sign_clipped"},
    "hapo": {"advantage_estimator": "hapo", "policy_loss": "hapo",
             "policy_loss_kwargs": {"adaptive_clip": True, "advantage_redistribution": True}},
    # APA's squared log-ratio regression (issue 16), on the rollout policy's log-probs (`reference: old`).
    "apa": {"advantage_estimator": "grpo", "policy_loss": "apa"},
    # One extra greedy decode per prompt (inside `_generate_and_score_completions`, so counted in "rest").
    "remax": {"advantage_estimator": "remax"},
    # HAPO's entropy-adaptive sampling temperature: one extra no-grad forward per generation batch for the entropy
    # statistics, and a logits processor in the sampling loop (both in "rest"/generation).
    "hapo_temperature": {"advantage_estimator": "grpo", "hapo_temperature_tau": 0.05},
    # Two rewards (digit share + space share) re-weighted before every batch: one extra forward and two backward passes
    # per step (in "rest"); TRL's runs keep the single cheap reward, whose cost is negligible next to a forward.
    "gradient_weights": {"advantage_estimator": "grpo", "reward_weighting": "gradient"},
}
GENERATION_METHOD = "_generate"  # TRL's rollout call, inherited unchanged by GroupRLTrainer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="tiny",
                        help="`tiny` (random 2-layer Llama from alignment.testing), an embedded alias such as "
                             "`smollm2-135m-instruct`, or a checkpoint path")
    parser.add_argument("--variants", default="all",
                        help=f"comma-separated names from {list(VARIANTS)}, or `all` (default)")
    parser.add_argument("--steps", type=int, default=10, help="measured optimiser steps per run (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="discarded steps before them (default 3)")
    parser.add_argument("--prompts-per-step", type=int, default=2, help="prompts per step (default 2)")
    parser.add_argument("--num-generations", type=int, default=4, help="completions per prompt, G (default 4)")
    parser.add_argument("--max-completion-length", type=int, default=16, help="new tokens per completion (16)")
    parser.add_argument("--loss-type", default="dapo",
                        help="TRL loss aggregation for every run (default `dapo`, TRL's default; the surrogate "
                             "variants need grpo, bnpo, dr_grpo or dapo)")
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient (default 0.0, TRL's: no reference)")
    parser.add_argument("--epsilon", type=float, default=0.2, help="clip range, both sides (default 0.2)")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads (default 1)")
    parser.add_argument("--trl-every", type=int, default=1,
                        help="re-run TRL after every N of our variants (default 1: TRL, ours, TRL, ..., TRL)")
    parser.add_argument("--out", default=None, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    names = list(VARIANTS) if args.variants == "all" else [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        parser.error(f"--variants: unknown {unknown or 'empty list'}; valid names: {', '.join(VARIANTS)} (or `all`)")
    for key in ("steps", "warmup", "prompts_per_step", "num_generations", "max_completion_length", "threads",
                "trl_every"):
        minimum = 0 if key == "warmup" else (2 if key == "num_generations" else 1)
        if getattr(args, key) < minimum:
            parser.error(f"--{key.replace('_', '-')} must be >= {minimum}, got {getattr(args, key)}")
    args.variant_names = names
    return args


ARGS = parse_args()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.process_setup import prepare_process  # noqa: E402  (imports no torch)

prepare_process(ARGS.threads)  # before torch is imported

import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from alignment.configs import GroupRLConfig  # noqa: E402
from alignment.data import load_task_suite  # noqa: E402
from alignment.trainers.group_rl import GroupRLTrainer  # noqa: E402
from benchmarks.timing import (  # noqa: E402  (after OMP_NUM_THREADS is set: it imports torch)
    CUDA, StepTimer, close_sampler, fmt_mem, memory_note, neighbour_mean, spread, summarize)
from benchmarks.workloads import model_path  # noqa: E402

torch.set_num_threads(ARGS.threads)
hf_logging.set_verbosity_error()
warnings.filterwarnings("ignore", category=FutureWarning)
TRL_NAME = "TRL GRPOTrainer"


def digit_share(completions, **kwargs) -> list[float]:
    """Reward: the share of digits among a completion's characters. Cheap, deterministic and varied even on a random
    model, so groups are mixed and every estimator has non-zero advantages to push through the loss."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def space_share(completions, **kwargs) -> list[float]:
    """Second objective for `gradient_weights`: the share of spaces among a completion's characters."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [t.count(" ") / max(len(t), 1) for t in texts]


def reward_funcs(variant: str | None) -> list:
    two = variant is not None and VARIANTS[variant].get("reward_weighting", "fixed") != "fixed"
    return [digit_share, space_share] if two else [digit_share]


class CompletionTokens(TrainerCallback):
    """Mean completion length of each step, read from TRL's own metric (shows both trainers generated alike)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.lengths: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        logged = self.trainer._metrics["train"].get("completions/mean_length") or [float("nan")]
        self.lengths.append(logged[-1])


def make_config(variant: str | None, tmp: str):
    """TRL's `GRPOConfig` (variant None) or our `GroupRLConfig` with the variant's fields, same shared options."""
    common = dict(
        output_dir=os.path.join(tmp, "out"), per_device_train_batch_size=ARGS.prompts_per_step * ARGS.num_generations,
        num_generations=ARGS.num_generations, max_completion_length=ARGS.max_completion_length,
        max_steps=ARGS.warmup + ARGS.steps, learning_rate=1e-6, loss_type=ARGS.loss_type, beta=ARGS.beta,
        epsilon=ARGS.epsilon, gradient_accumulation_steps=1, report_to="none", save_strategy="no",
        logging_steps=10_000, disable_tqdm=True, seed=0, use_cpu=not CUDA, bf16=False, gradient_checkpointing=False,
    )
    if variant is None:
        return GRPOConfig(**common)
    return GroupRLConfig(**common, **VARIANTS[variant])


def run_once(variant: str | None, path: str, data, tmp: str) -> dict:
    """Train `warmup + steps` steps with TRL (variant None) or ours; return timings, generation share, memory."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    trainer_cls = GRPOTrainer if variant is None else GroupRLTrainer
    trainer = trainer_cls(model=model, reward_funcs=reward_funcs(variant), args=make_config(variant, tmp),
                          train_dataset=data, processing_class=tokenizer)
    timer = StepTimer(ARGS.warmup)
    timer.time_method(trainer, GENERATION_METHOD)
    lengths = CompletionTokens(trainer)
    trainer.add_callback(timer)
    trainer.add_callback(lengths)
    trainer.remove_callback(PrinterCallback)  # no end-of-run metrics dump in the table
    trainer.train()
    measured = timer.durations[ARGS.warmup:]
    generation = timer.sections[GENERATION_METHOD][ARGS.warmup:]
    rest = [step - gen for step, gen in zip(measured, generation)]
    result = {
        "trainer": TRL_NAME if variant is None else "GroupRLTrainer", "variant": variant or "trl_default",
        **summarize(measured),
        "generation_median_s": statistics.median(generation), "generation_s": generation,
        "generation_share": sum(generation) / sum(measured),
        "rest_median_s": statistics.median(rest),
        "completion_tokens_mean": statistics.fmean(lengths.lengths[ARGS.warmup:]),
        **timer.memory(),
    }
    del trainer, model
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ARGS.variant_names:  # bad estimator / switch combination -> error before anything runs
            GroupRLTrainer._check_config(make_config(variant, tmp))
        path = model_path(ARGS.model, tmp)
        # Enough distinct prompts for every step; the repeat sampler draws them in the same seeded order for all runs.
        data = load_task_suite("train", "prompt_only", domains=["addition"],
                               limit_per_domain=ARGS.prompts_per_step * (ARGS.warmup + ARGS.steps))
        runs: list[dict] = []

        def run(variant):
            row = run_once(variant, path, data, tmp)
            row["order"] = len(runs)
            runs.append(row)
            print(f"  [{row['order']:2d}] {row['trainer']:15s} {row['variant']:22s} median {row['median_s']:.4f} s "
                  f"(min {row['min_s']:.4f}, max {row['max_s']:.4f}), generation {100 * row['generation_share']:.0f}%",
                  flush=True)

        print(f"model={ARGS.model} steps={ARGS.steps} warmup={ARGS.warmup} prompts/step={ARGS.prompts_per_step} "
              f"G={ARGS.num_generations} max_completion_length={ARGS.max_completion_length} loss_type={ARGS.loss_type} "
              f"beta={ARGS.beta} threads={ARGS.threads} device={'cuda' if CUDA else 'cpu'}", flush=True)
        run(None)
        for i, variant in enumerate(ARGS.variant_names):
            run(variant)
            if (i + 1) % ARGS.trl_every == 0 or i == len(ARGS.variant_names) - 1:
                run(None)

    def is_trl(r):
        return r["trainer"] == TRL_NAME

    for row in runs:
        if is_trl(row):
            continue
        row["trl_median_s"] = neighbour_mean(runs, row, is_trl)
        row["ratio"] = row["median_s"] / row["trl_median_s"]
        row["trl_rest_median_s"] = neighbour_mean(runs, row, is_trl, key="rest_median_s")
        row["rest_ratio"] = row["rest_median_s"] / row["trl_rest_median_s"]
    trl = spread([r["median_s"] for r in runs if is_trl(r)])
    trl_spread = {"trl_runs": trl["runs"], "trl_median_min_s": trl["min"], "trl_median_max_s": trl["max"],
                  "trl_spread_pct": trl["pct"]}

    mem_header = "peak RSS MiB" if not CUDA else "peak alloc MiB"
    print()
    print(f"{'trainer':15s} {'variant':22s} {'median s/step':>13s} {'min-max':>17s} {'gen %':>6s} {'rest s':>7s} "
          f"{'vs TRL':>7s} {'rest vs':>7s} {'tokens':>6s} {'mem +MiB':>8s} {mem_header:>9s}")
    for row in runs:
        ratio = f"{row['ratio']:.3f}x" if "ratio" in row else "-"
        rest_ratio = f"{row['rest_ratio']:.3f}x" if "rest_ratio" in row else "-"
        print(f"{row['trainer']:15s} {row['variant']:22s} {row['median_s']:13.4f} "
              f"{row['min_s']:8.4f}-{row['max_s']:<8.4f} {100 * row['generation_share']:5.1f}% "
              f"{row['rest_median_s']:7.4f} {ratio:>7s} {rest_ratio:>7s} {row['completion_tokens_mean']:6.1f} "
              f"{fmt_mem(row)}")
    print(f"\nTRL spread over {trl['runs']} runs: median s/step {trl['min']:.4f} - {trl['max']:.4f} "
          f"({trl['pct']:.1f}% of the median). Ratios compare each run with the mean of the TRL runs just before and "
          "after it; `rest` is step time minus time inside generation.")
    print(memory_note())

    if ARGS.out:
        meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
                "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "torch": torch.__version__,
                "device": "cuda" if CUDA else "cpu", "gpu": torch.cuda.get_device_name() if CUDA else None,
                "generation_method": GENERATION_METHOD, "reward": digit_share.__name__,
                **{k: v for k, v in vars(ARGS).items() if k != "variant_names"}, "variants": ARGS.variant_names}
        with open(ARGS.out, "w") as f:
            json.dump({"meta": meta, "spread": trl_spread, "runs": runs}, f, indent=2)
        print(f"wrote {ARGS.out}")
    close_sampler()


if __name__ == "__main__":
    main()
