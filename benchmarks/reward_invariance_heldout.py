"""Domain-invariant reward models (V-REx, `reward_invariance: vrex`; DIAL, `reward_invariance: dial`) vs a single
Bradley-Terry reward model, scored on task-suite domains with no labels in training (the setting of
`benchmarks/warm_heldout.py`).

Every run is `alignment-reward` with the recipe `recipes/smollm2-135m/reward-vrex.yaml` (or the tiny one with
`--model tiny`) and identical overrides (`seed`, `data_seed`, steps, learning rate, label noise); the single reward
model sets `--reward_invariance none --reward_invariance_kwargs {}` (TRL's loss exactly). V-REx and the single model
train on the labelled domains only; DIAL also gets the *training* pairs of the held-out domains as unlabelled target
data (`target_domains`: their order is never read), which is what it is for — it then sees the held-out domains'
inputs, the others do not. Pairwise accuracy = fraction of clean *test* pairs with r(chosen) > r(rejected), on the
labelled domains (in-domain) and on the held-out ones.

    OMP_NUM_THREADS=1 python benchmarks/reward_invariance_heldout.py --output_dir outputs/vrex-heldout

Writes `<output_dir>/vrex.json` and `<output_dir>/vrex.md` (the table). Finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from warm_heldout import load, recipe_and_model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/vrex-heldout")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a model alias/path, or `tiny`")
    parser.add_argument("--max_steps", type=int, default=30, help="reward-model steps per run (batch 8)")
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--data_seed", type=int, default=1, help="the order of the training data (both runs)")
    parser.add_argument("--penalty_weight", type=float, default=10.0)
    parser.add_argument("--anneal_steps", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.2, help="label noise of the training pairs (test is clean)")
    parser.add_argument("--train_domains", nargs="+", default=["addition", "subtraction", "multiplication"])
    parser.add_argument("--heldout_domains", nargs="+", default=["comparison", "counting", "reversal", "word_problem"])
    parser.add_argument("--eval_per_domain", type=int, default=30, help="clean test pairs per domain")
    parser.add_argument("--arms", nargs="+", default=["single", "vrex", "dial"], choices=["single", "vrex", "dial"])
    parser.add_argument("--dial_weight", type=float, default=0.01, help="DIAL's lambda (the released config's)")
    parser.add_argument("--dial_max_steps", type=int, default=None,
                        help="DIAL's steps (default --max_steps); e.g. max_steps x (all domains / labelled domains) "
                        "to give it as many labelled pairs as the others")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    from alignment.commands.reward_cli import load_reward_model, pairwise_summary, reward_main, score_pairs
    from alignment.data import load_task_suite

    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe, model = recipe_and_model(args.model, out, "reward-vrex")
    vrex = json.dumps({"penalty_weight": args.penalty_weight, "anneal_steps": args.anneal_steps})
    dial = json.dumps({"target_domains": args.heldout_domains, "weight": args.dial_weight})
    arms = {"single": ("single RM (TRL loss)", ["--reward_invariance", "none", "--reward_invariance_kwargs", "{}"]),
            "vrex": (f"V-REx RM (lambda={args.penalty_weight:g})", ["--reward_invariance_kwargs", vrex]),
            "dial": (f"DIAL RM (lambda={args.dial_weight:g}, held-out train pairs unlabelled)",
                     ["--reward_invariance", "dial", "--reward_invariance_kwargs", dial,
                      "--task_domains", *args.train_domains, *args.heldout_domains,
                      *(["--max_steps", str(args.dial_max_steps)] if args.dial_max_steps else [])])}
    runs = dict(arms[arm] for arm in args.arms)
    record = {"args": vars(args), "load_before": load(), "train_seconds": {}, "train_logs": {}}
    paths = {}
    for arm, (name, extra) in zip(args.arms, runs.items()):
        path = out / f"run-{arm}"
        if not (path / "config.json").is_file():
            start = time.time()
            trainer, _ = reward_main([
                "--config", str(recipe), "--model_name_or_path", model,
                "--seed", "42", "--data_seed", str(args.data_seed),
                "--max_steps", str(args.max_steps), "--learning_rate", str(args.learning_rate),
                "--task_domains", *args.train_domains, "--task_label_noise", str(args.noise),
                "--train_limit_per_domain", "300", "--eval_limit_per_domain", "1", "--logging_steps", "5",
                "--per_device_train_batch_size", "8", "--report_to", "none", "--output_dir", str(path), *extra])
            record["train_seconds"][name] = time.time() - start
            record["train_logs"][name] = [{k: e[k] for k in ("step", "loss", "accuracy", "invariance_penalty",
                                                             "source_loss", "domain_loss", "critic_distance",
                                                             "train_loss") if k in e}
                                          for e in trainer.state.log_history if "loss" in e or "train_loss" in e]
        paths[name] = path

    splits = {"in-domain": args.train_domains, "held-out": args.heldout_domains}
    data = {name: load_task_suite("test", "preference", domains=domains, limit_per_domain=args.eval_per_domain)
            for name, domains in splits.items()}
    table = {}
    for name, path in paths.items():
        scorer, tokenizer = load_reward_model(str(path))
        table[name] = {split: pairwise_summary(dataset, *score_pairs(scorer, tokenizer, dataset, 32,
                                                                      show_progress=False))["pairwise_accuracy"]
                       for split, dataset in data.items()}
    record["accuracy"] = table
    record["load_after"] = load()
    (out / "vrex.json").write_text(json.dumps(record, indent=2) + "\n")

    domains = [*args.train_domains, *args.heldout_domains]
    header = ("| model | in-domain | held-out | " + " | ".join(domains) + " |\n|---|---|---|"
              + "---|" * len(domains) + "\n")
    rows = []
    for name, acc in table.items():
        cells = [acc["in-domain"]["all"], acc["held-out"]["all"]]
        cells += [acc["in-domain"].get(d, acc["held-out"].get(d)) for d in domains]
        rows.append(f"| {name} | " + " | ".join(f"{100 * c:.1f}" for c in cells) + " |")
    text = header + "\n".join(rows) + "\n"
    (out / "vrex.md").write_text(text)
    print(text)
    print(json.dumps({k: record[k] for k in ("load_before", "load_after", "train_seconds", "train_logs")},
                     indent=2))
    return record


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
