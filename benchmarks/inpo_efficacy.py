"""INPO vs iterative DPO at equal rounds and steps: only the loss differs (`inpo` vs `sigmoid`).

Both arms are `scripts/iterate.py` runs built from `recipes/smollm2-135m/inpo.yaml` (the generator, judge and round
settings) with `--rounds` rounds of `--steps` steps each, the same base model, prompts, seed, sampler
(`best_vs_worst` pairs, `math_verify_reward`, log-probs of the sampling model recorded) and reference (`reference:
base`: M_0 in every round, INPO's fixed pi_ref; for the sigmoid arm this makes it DPO against the starting model
rather than `iterative-dpo.yaml`'s reference = the round's own start). The train section is `dpo.yaml` (beta 0.1,
lr 2e-5 cosine, batch 8) for both; the `inpo` arm adds `loss_kwargs: {eta: 0.0075, tau: 0.0025}` (the recipe's,
from the authors' code). Round 1's pairs are sampled once and copied to the second arm (same model and seed: the
same pairs); from round 2 each arm samples from its own round-1 model.

Per round it records the pairs' statistics (pairs, prompts without a pair, mean score and pass rate of the samples,
mean scores of chosen/rejected, mean recorded round log-probs and lengths), the training log (loss, implicit-reward
margins, first/last logged step) and held-out answer accuracy before/after (greedy, final-answer checker).

    OMP_NUM_THREADS=2 python benchmarks/inpo_efficacy.py --out outputs/inpo_efficacy
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ARMS: dict[str, dict] = {
    "sigmoid": {"loss_type": "sigmoid"},
    "inpo": {"loss_type": "inpo", "loss_kwargs": {"eta": 0.0075, "tau": 0.0025}},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="training steps per round (batch 8)")
    parser.add_argument("--train_per_domain", type=int, default=16, help="prompts per domain sampled each round")
    parser.add_argument("--eval_per_domain", type=int, default=25, help="held-out prompts per domain")
    parser.add_argument("--out", default="outputs/inpo_efficacy")
    return parser.parse_args(argv)


def recipe(opts, arm: str) -> dict:
    base = yaml.safe_load((ROOT / "recipes/smollm2-135m/inpo.yaml").read_text())
    base["generate"].update(train_limit_per_domain=opts.train_per_domain, eval_limit_per_domain=opts.eval_per_domain)
    train = {key: value for key, value in base["train"].items() if key not in ("loss_type", "loss_kwargs")}
    train.update(ARMS[arm], max_steps=opts.steps, save_strategy="no", report_to="none")
    train.pop("save_steps", None)
    return {**base, "model_name_or_path": opts.model, "output_dir": str(Path(opts.out) / arm), "rounds": opts.rounds,
            "train": train}


def pair_statistics(pairs_dir: Path) -> dict:
    rows = [json.loads(line) for line in (pairs_dir / "train.jsonl").read_text().splitlines() if line.strip()]

    def mean(key, fn=lambda v: v):
        values = [fn(row[key]) for row in rows if row.get(key) is not None]
        return sum(values) / len(values) if values else None

    def text(value):  # a string, or one assistant message for chat prompts
        return value if isinstance(value, str) else value[-1]["content"]

    return {"rows": len(rows), "score_chosen": mean("score_chosen"), "score_rejected": mean("score_rejected"),
            "round_chosen_logps": mean("round_chosen_logps"), "round_rejected_logps": mean("round_rejected_logps"),
            "chars_chosen": mean("chosen", lambda v: len(text(v))), "chars_rejected": mean("rejected",
                                                                                           lambda v: len(text(v)))}


def training_log(model_dir: Path) -> dict:
    history = json.loads((model_dir / "trainer_state.json").read_text())["log_history"]
    logs = [entry for entry in history if "loss" in entry]
    return {"first": logs[0] if logs else None, "last": logs[-1] if logs else None,  # every metric (`inpo/h`, ...)
            "train_runtime": next((e["train_runtime"] for e in history if "train_runtime" in e), None)}


def main(argv=None) -> dict:
    opts = parse_args(argv)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"options": vars(opts), "arms": {}}
    first_pairs = None
    for arm in opts.arms:
        config = recipe(opts, arm)
        path = out / f"{arm}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        arm_dir = Path(config["output_dir"])
        if first_pairs is not None and not (arm_dir / "round-1/pairs/generation.json").is_file():
            shutil.copytree(first_pairs, arm_dir / "round-1/pairs", dirs_exist_ok=True)
        start = time.monotonic()
        with open(out / f"{arm}.log", "w") as log:
            proc = subprocess.run([sys.executable, "scripts/iterate.py", "--config", str(path)], cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode:
            raise SystemExit(f"{arm} failed ({proc.returncode}); see {out / f'{arm}.log'}")
        first_pairs = first_pairs or arm_dir / "round-1/pairs"
        records = json.loads((arm_dir / "iterations.json").read_text())
        for record in records:
            round_dir = arm_dir / f"round-{record['round']}"
            record["pair_statistics"] = pair_statistics(round_dir / "pairs")
            record["training"] = training_log(round_dir / "model")
        report["arms"][arm] = {"recipe": config, "wall_s": time.monotonic() - start, "rounds": records}
        print(f"{arm}: " + "; ".join(f"round {r['round']}: {r['pairs']} pairs, held-out "
                                     f"{r['accuracy_after']['all']:.3f}" for r in records), flush=True)
        (out / "inpo_efficacy.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


if __name__ == "__main__":
    main()
