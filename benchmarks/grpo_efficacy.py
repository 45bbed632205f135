"""GRPO vs Dr. GRPO vs DAPO-style vs NGRPO on SmolLM2-135M-Instruct, at equal steps, on one hard task domain.

For each method: train `--steps` steps from the same base model, seed and prompts (only the recipe's method fields
differ), evaluate held-out greedy accuracy every `--eval_every` steps (step 0 = the base model), and record the
fraction of all-wrong groups per step (the groups GRPO learns nothing from and NGRPO still does). Prints a table and
writes JSON.

    OMP_NUM_THREADS=2 python benchmarks/grpo_efficacy.py --steps 30 --out outputs/grpo_efficacy.json
    OMP_NUM_THREADS=2 python benchmarks/grpo_efficacy.py --measure_only   # seconds per step, no full run

The default domain is `multiplication` (lowest base accuracy of the arithmetic domains in docs/demo-results.md:
4%), where most groups are all-wrong: the setting NGRPO targets. Cost on 2 CPU cores: 4 methods x steps x
(seconds per step) plus the evaluations; run `--measure_only` first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.process_setup import prepare_process  # noqa: E402  (imports no torch)

prepare_process()

# Method -> the recipe fields that define it (everything else is shared). DAPO-style and NGRPO here run without
# `group_filter` (dynamic sampling), as docs/grpo-efficacy.md was measured; the recipes turn it on.
METHODS: dict[str, dict] = {
    "grpo": {"advantage_estimator": "grpo", "loss_type": "grpo", "epsilon": 0.2, "epsilon_high": 0.2},
    "dr_grpo": {"advantage_estimator": "dr_grpo", "loss_type": "dr_grpo", "epsilon": 0.2, "epsilon_high": 0.2},
    "dapo": {"advantage_estimator": "grpo", "loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28,
             "mask_truncated_completions": True},
    "ngrpo": {"advantage_estimator": "ngrpo", "loss_type": "dapo", "epsilon": 0.16, "epsilon_high": 0.24},
    # Baselines without std scaling: leave-one-out mean, and ReMax's greedy rollout (one extra decode per prompt).
    "rloo": {"advantage_estimator": "rloo", "loss_type": "grpo", "epsilon": 0.2, "epsilon_high": 0.2},
    "remax": {"advantage_estimator": "remax", "loss_type": "grpo", "epsilon": 0.2, "epsilon_high": 0.2},
    # APA (recipes/smollm2-135m/apa.yaml): squared error between the log-ratio to the rollout policy and A / lam in
    # place of PPO's clip, on GRPO's group-relative advantages, token mean (`bnpo`) as the official code's `/ n`.
    "apa": {"advantage_estimator": "grpo", "loss_type": "bnpo", "policy_loss": "apa",
            "policy_loss_kwargs": {"lam": 0.1, "reference": "old"}},
    # HAPO, all four parts as recipes/smollm2-135m/hapo.yaml: its advantage estimator, its policy loss (adaptive
    # clip, advantage redistribution) and the entropy-adaptive sampling temperature.
    "hapo": {"advantage_estimator": "hapo", "loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.2,
             "policy_loss": "hapo", "policy_loss_kwargs": {"adaptive_clip": True, "advantage_redistribution": True,
                                                           "entropy_pivot": 0.8, "clip_alpha": 1.0, "adv_beta": 1.0},
             "hapo_temperature_tau": 0.05},
    # DAPO with its dynamic sampling (`group_filter: zero_variance`, refills from new prompts), as dapo.yaml.
    "dapo_filter": {"advantage_estimator": "grpo", "loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28,
                    "mask_truncated_completions": True, "group_filter": "zero_variance",
                    "max_generation_rounds": 10},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--domain", default="multiplication")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval_every", type=int, default=10)
    parser.add_argument("--eval_prompts", type=int, default=50)
    parser.add_argument("--prompts_per_step", type=int, default=2)
    parser.add_argument("--num_generations", type=int, default=8)
    parser.add_argument("--max_completion_length", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="outputs/grpo_efficacy.json")
    parser.add_argument("--measure_only", action="store_true",
                        help="Train one method for --steps steps (default 3 here) and report seconds per step.")
    return parser.parse_args(argv)


class _AccuracyCurve:
    """Trainer callback: greedy held-out accuracy every `every` steps (and at step 0)."""

    def __init__(self, tokenizer, answers, every: int, max_new_tokens: int):
        from transformers import TrainerCallback

        outer = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                outer.evaluate(0, model)

            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % outer.every == 0 or state.global_step == state.max_steps:
                    outer.evaluate(state.global_step, model)

        self.callback = Callback()
        self.tokenizer, self.answers, self.every, self.max_new_tokens = tokenizer, answers, every, max_new_tokens
        self.curve: list[dict] = []

    def evaluate(self, step: int, model) -> None:
        from alignment.evaluation import evaluate_answers

        was_training = model.training
        result = evaluate_answers(model, self.tokenizer, self.answers, max_new_tokens=self.max_new_tokens,
                                  batch_size=50)
        model.train(was_training)
        overall = result["accuracy"]["all"]
        self.curve.append({"step": step, "accuracy": overall})
        print(f"  step {step:3d}: held-out accuracy {overall:.3f}", flush=True)


def run_method(name: str, opts, train, test) -> dict:
    from transformers import AutoModelForCausalLM

    from alignment.configs import GroupRLConfig
    from alignment.modeling.models import resolve_model_name_or_path
    from alignment.modeling.model_loading import load_tokenizer
    from alignment.trainers.group_rl import GroupRLTrainer

    path = resolve_model_name_or_path(opts.model)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    config = GroupRLConfig(
        output_dir=f"/tmp/grpo_efficacy/{name}", report_to="none", bf16=False, use_cpu=True, save_strategy="no",
        logging_steps=1, seed=opts.seed, learning_rate=opts.learning_rate, lr_scheduler_type="constant",
        max_steps=opts.steps, num_generations=opts.num_generations,
        per_device_train_batch_size=opts.prompts_per_step * opts.num_generations,
        max_completion_length=opts.max_completion_length, beta=0.0, temperature=1.0, gradient_checkpointing=False,
        **METHODS[name],
    )
    curve = None if opts.measure_only else _AccuracyCurve(tokenizer, test, opts.eval_every, opts.max_completion_length)
    trainer = GroupRLTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer,
                             callbacks=[curve.callback] if curve else None)
    start = time.monotonic()
    trainer.train()
    wall = time.monotonic() - start
    logs = [entry for entry in trainer.state.log_history if "frac_all_wrong_groups" in entry]
    step_times = [entry["step_time"] for entry in logs if "step_time" in entry]
    return {
        "method": name,
        "settings": METHODS[name],
        "train_wall_s": wall,
        "seconds_per_step": sum(step_times) / len(step_times) if step_times else wall / max(opts.steps, 1),
        "frac_all_wrong_groups": [entry["frac_all_wrong_groups"] for entry in logs],
        "reward": [entry.get("reward") for entry in logs],
        "accuracy_curve": curve.curve if curve else [],
        "log_history": logs,  # every logged metric per step (e.g. `apa/log_ratio_mean`, clip ratios)
    }


def format_table(results: list[dict]) -> str:
    steps = sorted({point["step"] for r in results for point in r["accuracy_curve"]})
    header = ["method", *[f"acc@{s}" for s in steps], "all-wrong groups (mean)", "s/step"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        acc = {point["step"]: point["accuracy"] for point in r["accuracy_curve"]}
        frac = r["frac_all_wrong_groups"]
        cells = [r["method"], *[f"{acc[s]:.3f}" if s in acc else "-" for s in steps],
                 f"{sum(frac) / len(frac):.2f}" if frac else "-", f"{r['seconds_per_step']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    opts = parse_args(argv)
    if opts.measure_only and "--steps" not in (argv if argv is not None else sys.argv[1:]):
        opts.steps = 3
    from alignment.data import load_task_suite

    train = load_task_suite("train", "prompt_only", domains=[opts.domain])
    test = load_task_suite("test", "prompt_only", domains=[opts.domain], limit_per_domain=opts.eval_prompts)
    methods = opts.methods[:1] if opts.measure_only else opts.methods
    results = []
    for name in methods:
        print(f"== {name} ({opts.steps} steps, {opts.prompts_per_step} prompts x {opts.num_generations} completions "
              f"per step, domain {opts.domain})", flush=True)
        results.append(run_method(name, opts, train, test))
        print(f"   {results[-1]['seconds_per_step']:.1f} s/step, train wall {results[-1]['train_wall_s']:.0f} s",
              flush=True)
    print(format_table(results))
    record = {"options": vars(opts), "threads": os.environ.get("OMP_NUM_THREADS"), "results": results}
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(record, indent=2))
    print(f"Written to {opts.out}")
    return record


if __name__ == "__main__":
    main()
