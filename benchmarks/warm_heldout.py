"""WARM on held-out domains: M reward models from one init (same `seed`, different `data_seed`), their weight
average (WARM, `alignment-warm`) and their prediction ensemble, scored on task-suite domains none of them trained on.

1. M runs of `alignment-reward` (`reward_cli.reward_main`, recipe `recipes/smollm2-135m/warm.yaml`, or the tiny
   recipe with `--model tiny`) on the training domains, each with `--data_seed i`;
2. `merge_reward_models` averages them (the init fingerprints must agree: checked there);
3. every model scores the clean test pairs of the training domains (in-domain) and of the held-out domains:
   pairwise accuracy = fraction of pairs with r(chosen) > r(rejected). Rows: the untrained init (same seed, no
   training: what the head says before any fine-tuning), each member, their mean, the prediction ensemble
   (mean score of the members, M forward passes) and WARM (one forward pass).

    OMP_NUM_THREADS=2 python benchmarks/warm_heldout.py --output_dir outputs/warm-heldout

Writes `<output_dir>/warm.json` and `<output_dir>/warm.md` (the table). Finished members are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/warm-heldout")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a model alias/path, or `tiny`")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--max_steps", type=int, default=30, help="reward-model steps per member (batch 8)")
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--noise", type=float, default=0.2, help="label noise of the training pairs (test is clean)")
    parser.add_argument("--train_domains", nargs="+", default=["addition", "subtraction", "multiplication"])
    parser.add_argument("--heldout_domains", nargs="+", default=["comparison", "counting", "reversal", "word_problem"])
    parser.add_argument("--eval_per_domain", type=int, default=30, help="clean test pairs per domain")
    return parser.parse_args(argv)


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def recipe_and_model(model: str, out: Path, recipe: str) -> tuple[Path, str]:
    """``recipes/<tiny|smollm2-135m>/<recipe>.yaml`` and the model to train: with ``model`` `tiny`, a tiny random
    model saved under ``out`` (the tiny recipe); otherwise ``model`` itself (the SmolLM2 recipe)."""
    if model == "tiny":
        from alignment.testing import save_tiny_model

        return ROOT / f"recipes/tiny/{recipe}.yaml", save_tiny_model(out / "tiny-base")
    return ROOT / f"recipes/smollm2-135m/{recipe}.yaml", model


def main(argv=None) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, set_seed

    from alignment.data import load_task_suite
    from alignment.modeling.models import resolve_model_name_or_path
    from alignment.commands.reward_cli import load_reward_model, pairwise_summary, reward_main, score_pairs
    from alignment.reward_merge import INIT_HASH_KEY, ensemble_scores, init_fingerprint, merge_reward_models

    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe, model = recipe_and_model(args.model, out, "warm")
    record = {"args": vars(args), "load_before": load(), "members": {}}

    start = time.time()
    members = []
    for i in range(1, args.members + 1):
        path = out / f"member-{i}"
        if not (path / "config.json").is_file():
            reward_main(["--config", str(recipe), "--model_name_or_path", model, "--data_seed", str(i),
                         "--max_steps", str(args.max_steps), "--learning_rate", str(args.learning_rate),
                         "--task_domains", *args.train_domains, "--task_label_noise", str(args.noise),
                         "--train_limit_per_domain", "300", "--eval_limit_per_domain", "1",
                         "--per_device_train_batch_size", "8", "--report_to", "none", "--output_dir", str(path)])
        members.append(str(path))
    record["train_seconds"] = time.time() - start
    merged = out / "warm"
    merge_reward_models(members, str(merged), overwrite=True)

    # The untrained init, rebuilt the way alignment-reward builds it: its fingerprint must be the members' record.
    set_seed(42)
    init = AutoModelForSequenceClassification.from_pretrained(resolve_model_name_or_path(model), num_labels=1,
                                                              dtype=torch.float32)
    recorded = json.loads((Path(members[0]) / "config.json").read_text())[INIT_HASH_KEY]
    record["init_rebuilt_matches_record"] = init_fingerprint(init) == recorded
    init_dir = out / "init"
    init.save_pretrained(init_dir)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(members[0]).save_pretrained(init_dir)

    splits = {"in-domain": args.train_domains, "held-out": args.heldout_domains}
    data = {name: load_task_suite("test", "preference", domains=domains, limit_per_domain=args.eval_per_domain)
            for name, domains in splits.items()}
    scores: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for name, path in [("init (untrained)", init_dir), *[(f"member {i + 1}", p) for i, p in enumerate(members)],
                       ("WARM (weight average)", merged)]:
        scorer, tokenizer = load_reward_model(str(path))
        scores[name] = {split: score_pairs(scorer, tokenizer, dataset, 32, show_progress=False)
                        for split, dataset in data.items()}
    member_names = [f"member {i + 1}" for i in range(len(members))]
    scores["ensemble (mean score)"] = {
        split: (ensemble_scores([scores[m][split][0] for m in member_names]),
                ensemble_scores([scores[m][split][1] for m in member_names])) for split in data}

    table = {name: {split: pairwise_summary(data[split], *s)["pairwise_accuracy"] for split, s in per.items()}
             for name, per in scores.items()}
    record["accuracy"] = table
    record["load_after"] = load()
    record["total_seconds"] = time.time() - start
    (out / "warm.json").write_text(json.dumps(record, indent=2) + "\n")

    domains = [*args.train_domains, *args.heldout_domains]
    header = ("| model | in-domain | held-out | " + " | ".join(domains) + " |\n|---|---|---|"
              + "---|" * len(domains) + "\n")
    member_mean = {split: sum(table[m][split]["all"] for m in member_names) / len(member_names) for split in data}

    def row(name, acc):
        cells = [acc["in-domain"]["all"], acc["held-out"]["all"]]
        cells += [acc["in-domain"].get(d, acc["held-out"].get(d)) for d in domains]
        return f"| {name} | " + " | ".join(f"{100 * c:.1f}" for c in cells) + " |"

    lines = [row(name, acc) for name, acc in table.items()]
    lines.insert(1 + len(members), f"| mean of members | {100 * member_mean['in-domain']:.1f} | "
                 f"{100 * member_mean['held-out']:.1f} |" + " |" * len(domains))
    text = header + "\n".join(lines) + "\n"
    (out / "warm.md").write_text(text)
    print(text)
    print(json.dumps({k: record[k] for k in ("load_before", "load_after", "train_seconds", "total_seconds",
                                             "init_rebuilt_matches_record")}, indent=2))
    return record


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
