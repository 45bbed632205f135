"""Your prompts + a verifier written by no one here -> on-policy pairs -> DPO / IRPO -> held-out pass rate.

The end-to-end run a user would do, measured on SmolLM2-135M-Instruct: `examples/data/math-problems` (school math,
chat prompts asking for `\\boxed{}`, LaTeX gold answers in `solution`; `benchmarks/make_math_problems.py`), scored by
`math-verify` (`math_verify_reward`). Steps:

1. `scripts/generate_pairs.py` on the first `--train_prompts` training problems: `--num_samples` answers each from the
   base model, pairs by `--strategy` (default `pass_fail`: correct vs wrong, IRPO's pairs).
2. The held-out problems (never trained on) scored before training: greedy answers, math-verify, per kind.
3. The same pairs and steps through (a) TRL's own `DPOTrainer` (sigmoid loss), (b) this toolkit's `run_dpo.py`
   with `loss_type: sigmoid` (should match (a): the same loss), (c) `run_dpo.py` with `loss_type: irpo` (DPO +
   length-normalised NLL of the winner, alpha 1). Shared: lr, batch, steps, beta, max length, seed.
4. Held-out pass rate after each, per kind; JSON and a Markdown table.

    OMP_NUM_THREADS=2 python benchmarks/onpolicy_e2e.py --out outputs/onpolicy_e2e
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.process_setup import prepare_process  # noqa: E402  (imports no torch)

prepare_process()

ARMS = ("trl_dpo", "sigmoid", "irpo")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default=str(ROOT / "examples/data/math-problems"))
    parser.add_argument("--train_prompts", type=int, default=64)
    parser.add_argument("--eval_prompts_per_kind", type=int, default=20)
    parser.add_argument("--num_samples", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--strategy", default="pass_fail")
    parser.add_argument("--max_pairs_per_prompt", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=2e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--pair_reward", default="math_verify_reward",
                        help="The reward that scores the sampled answers (a smoke run on a random model needs one "
                        "that separates them, e.g. a file reward); the held-out score is always math-verify.")
    parser.add_argument("--out", default="outputs/onpolicy_e2e")
    return parser.parse_args(argv)


def shared_training(opts) -> dict:
    """The fields every arm trains with (TRL's DPOConfig names, which the recipes share)."""
    return {"learning_rate": opts.learning_rate, "lr_scheduler_type": "constant", "per_device_train_batch_size":
            opts.batch_size, "gradient_accumulation_steps": 1, "max_steps": opts.steps, "beta": opts.beta,
            "max_length": opts.max_length, "seed": opts.seed, "logging_steps": 5, "save_strategy": "no",
            "report_to": "none", "bf16": False, "gradient_checkpointing": False}


def held_out(opts):
    from datasets import load_dataset

    from alignment.data_loading import limit_rows_per_domain

    test = load_dataset("json", data_files=str(Path(opts.data) / "test.jsonl"), split="train")
    return limit_rows_per_domain(test, opts.eval_prompts_per_kind)


def evaluate(model, tokenizer, test, opts) -> dict:
    from alignment.evaluation import evaluate_answers
    from alignment.rewards import get_reward_function

    result = evaluate_answers(model, tokenizer, test, max_new_tokens=opts.max_new_tokens, batch_size=50,
                              rewards=[get_reward_function("math_verify_reward")])
    return {"pass_rate": result["accuracy"], "seconds": result["seconds"], "samples": result["samples"][:4]}


def run_trl_dpo(opts, pairs_dir: Path, model_path: str, test) -> dict:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from alignment.modeling.model_loading import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    pairs = load_dataset("json", data_files=str(pairs_dir / "train.jsonl"), split="train")
    pairs = pairs.select_columns(["prompt", "chosen", "rejected"])
    args = DPOConfig(output_dir=str(Path(opts.out) / "trl_dpo"), loss_type=["sigmoid"], use_cpu=True,
                     **shared_training(opts))
    trainer = DPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    start = time.monotonic()
    trainer.train()
    wall = time.monotonic() - start
    return {"train_wall_s": wall, **evaluate(trainer.model, tokenizer, test, opts)}


def run_ours(opts, loss: str, pairs_dir: Path, model_path: str) -> dict:
    import yaml

    from alignment.commands import cli

    out = Path(opts.out) / loss
    recipe = {"model_name_or_path": model_path, "dataset_name": str(pairs_dir), "loss_type": loss,
              "eval_limit_per_domain": opts.eval_prompts_per_kind, "eval_max_new_tokens": opts.max_new_tokens,
              "eval_batch_size": 50, "eval_reward_funcs": ["math_verify_reward"], "output_dir": str(out),
              **({"loss_kwargs": {"alpha": 1.0}} if loss == "irpo" else {}), **shared_training(opts)}
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{loss}.yaml").write_text(yaml.safe_dump(recipe))
    start = time.monotonic()
    trainer, results = cli.dpo_main(["--config", str(out.parent / f"{loss}.yaml")])
    wall = time.monotonic() - start - results["after"]["seconds"]
    return {"train_wall_s": wall, "pass_rate": results["after"]["accuracy"], "seconds": results["after"]["seconds"],
            "samples": results["after"]["samples"][:4]}


def format_table(record: dict) -> str:
    kinds = [k for k in record["base"]["pass_rate"] if k != "all"] + ["all"]
    header = ["", *kinds]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, arm in [("base (before)", record["base"]), *record["arms"].items()]:
        lines.append("| " + " | ".join([name, *[f"{100 * arm['pass_rate'][k]:.0f}%" for k in kinds]]) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    opts = parse_args(argv)
    from transformers import AutoModelForCausalLM

    from alignment.commands.generate_cli import generate_main
    from alignment.modeling.models import resolve_model_name_or_path
    from alignment.modeling.model_loading import load_tokenizer

    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = resolve_model_name_or_path(opts.model)
    pairs_dir = out / "pairs"
    start = time.monotonic()
    if not (pairs_dir / "generation.json").is_file():
        generate_main(["--model_name_or_path", model_path, "--dataset_name", opts.data, "--limit",
                       str(opts.train_prompts), "--num_samples", str(opts.num_samples), "--max_new_tokens",
                       str(opts.max_new_tokens), "--reward_funcs", opts.pair_reward, "--strategy", opts.strategy,
                       "--max_pairs_per_prompt", str(opts.max_pairs_per_prompt), "--seed", str(opts.seed),
                       "--batch_size", "8", "--output_dir", str(pairs_dir)])
    generation = json.loads((pairs_dir / "generation.json").read_text())
    generation_s = time.monotonic() - start
    test = held_out(opts)
    record = {"settings": {k: v for k, v in vars(opts).items()}, "model": model_path,
              "generation": {k: generation[k] for k in ("prompts", "pairs", "prompts_without_pair", "completions",
                                                        "mean_score", "pass_rate")},
              "generation_wall_s": generation_s, "arms": {}}
    base = AutoModelForCausalLM.from_pretrained(model_path)
    record["base"] = evaluate(base, load_tokenizer(model_path), test, opts)
    del base
    print(f"pairs: {generation['pairs']} from {generation['prompts']} prompts; base held-out pass rate "
          f"{record['base']['pass_rate']['all']:.3f}", flush=True)
    for arm in opts.arms:
        record["arms"][arm] = (run_trl_dpo(opts, pairs_dir, model_path, test) if arm == "trl_dpo"
                               else run_ours(opts, arm, pairs_dir, model_path))
        print(f"{arm}: held-out pass rate {record['arms'][arm]['pass_rate']['all']:.3f}", flush=True)
        (out / "onpolicy_e2e.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(format_table(record))
    return record


if __name__ == "__main__":
    main()
