"""Domain mixtures at equal steps: proportional vs temperature vs uniform vs DoReMi (and online rules: Group DRO, DoGE,
DGA, ScaleBiO), per-domain held-out loss.

    python benchmarks/domain_efficacy.py --model tiny --out benchmarks/domain-efficacy-tiny.json
    python benchmarks/domain_efficacy.py --model smollm2-135m-instruct --steps 40 --batch-size 8   # slow on CPU

Setup: SFT on the embedded task suite with deliberately unequal domain sizes (`--sizes`, default 300/120/40/12 rows
of addition/multiplication/comparison/reversal), so that the mixture matters. Every arm trains the same start model
for the same number of steps and batch size, drawing each example's domain from its mixture with the
`DomainWeightedSampler` (`domain_reweighting: static`, `domain_reweighting_mode: upsample`), so only the shares differ:

- `proportional`: p_i ∝ n_i (temperature 1, what plain shuffling gives);
- `temperature`: p_i ∝ n_i^(1/T) (`--temperature`, default 3; "Upsample or Upweight?", arXiv 2410.04579);
- `uniform`: p_i = 1/K (temperature → ∞);
- `doremi`: DoReMi (arXiv 2305.10429) in two stages: the `uniform` run is the reference model (the paper trains
  the reference on the baseline mixture); a proxy trains from the same start with `domain_reweighting: doremi`
  against it (per-token clipped excess loss, upweight, η=1, ε=1e-3) for the same number of steps; the main run then
  samples with the proxy's averaged weights ᾱ. DoReMi's extra cost (one proxy run) is reported, not hidden.

Online-rule arms (`--arms`, one run each, `domain_reweighting: <rule>` in `upweight` mode from uniform weights, the
rule's default hyper-parameters unless stated): `group_dro` (worst-group EG on the training losses), `doge` (gradient
alignment with the target domain, `target_domains: [t]`), `dga` and `scalebio` (specialise to the target domain
`--target-domain`, default `reversal`, from its per-domain gradient; `target_share: 0`, so its rows are never trained
on, only used for the gradient, as in both papers). For these the target domain's column is the number to read,
beside `uniform_generic` (static, upweight: uniform over the other domains, the target's loss weighted 0: the same
"never train on the target" setting with a fixed mixture) and `uniform` (which does train on the target). Gradient rules use the last
decoder block's parameters (`domain_doge_last_layers: 1`).

Reported per arm (and per seed, then averaged): held-out token loss per domain (the test split, 50 prompts per
domain), the worst domain's loss, the average over domains, and the shares used (mean over seeds: DoReMi's differ
per seed; for online arms, the initial shares and the final weights). Prints a table, writes JSON.
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

DEFAULT_SIZES = "addition=300,multiplication=120,comparison=40,reversal=12"
DEFAULT_ARMS = ("proportional", "temperature", "uniform", "doremi")
# The baseline of the target-specialising arms: uniform over the other domains, the target's loss weighted 0 (static).
GENERIC_ARM = "uniform_generic"
# Online rules: rule name -> its `domain_reweighting_kwargs` given the target domain's index (sorted domain names).
ONLINE_ARMS = {
    "group_dro": lambda target: {},
    "doge": lambda target: {"target_domains": [target]},
    "dga": lambda target: {"target_domains": [target]},
    "scalebio": lambda target: {"target_domains": [target]},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="`tiny` (random, built offline) or a model path/alias.")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="Training rows per domain, `name=n,...`.")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=None, help="Default: 1e-3 tiny, 2e-5 otherwise.")
    parser.add_argument("--temperature", type=float, default=3.0)
    parser.add_argument("--eval-limit", type=int, default=50, help="Held-out rows per domain.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=[*DEFAULT_ARMS, GENERIC_ARM, *ONLINE_ARMS],
                        help="Which arms to run (default: the static mixtures and DoReMi).")
    parser.add_argument("--target-domain", default="reversal",
                        help="The specialised / validation domain of the doge, dga and scalebio arms.")
    parser.add_argument("--workdir", default=None, help="Scratch directory (default: a temporary one).")
    parser.add_argument("--out", default=None, help="Write the results as JSON here.")
    return parser.parse_args(argv)


def _sizes(text: str) -> dict[str, int]:
    pairs = [item.split("=") for item in text.split(",") if item]
    return {name.strip(): int(n) for name, n in pairs}


def _datasets(sizes: dict[str, int], eval_limit: int):
    from datasets import concatenate_datasets

    from alignment.data import load_task_suite

    train = concatenate_datasets([load_task_suite("train", "sft", domains=[d], limit_per_domain=n)
                                  for d, n in sizes.items()]).shuffle(seed=0)
    evals = {d: load_task_suite("test", "sft", domains=[d], limit_per_domain=eval_limit) for d in sizes}
    return train, evals


def _train(model_dir, train, evals, out: Path, args, seed: int, **domain_fields) -> dict:
    """One SFT run; returns held-out loss per domain, the shares it started from, and its wall time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.configs import AlignmentSFTConfig
    from alignment.trainers.sft import DomainSFTTrainer

    lr = args.learning_rate or (1e-3 if args.model == "tiny" else 2e-5)
    config = AlignmentSFTConfig(
        output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=16, learning_rate=lr, lr_scheduler_type="constant", max_length=128,
        save_strategy="no", eval_strategy="no", report_to="none", logging_steps=10, seed=seed, bf16=False,
        use_cpu=not _has_gpu(), **domain_fields,
    )
    start = time.perf_counter()
    trainer = DomainSFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=config,
                               train_dataset=train, eval_dataset=evals,
                               processing_class=AutoTokenizer.from_pretrained(model_dir))
    trainer.train()
    seconds = time.perf_counter() - start
    metrics = trainer.evaluate()
    trainer.save_model(str(out))
    summary = trainer.domain_weights.summary()
    return {"loss": {d: metrics[f"eval_{d}_loss"] for d in evals}, "shares": summary["initial_weights"],
            "final_weights": summary["final_weights"], "average_weights": summary["average_weights"],
            "train_seconds": seconds}


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _model_dir(args, workdir: Path) -> str:
    if args.model == "tiny":
        from alignment.testing import save_tiny_model

        return save_tiny_model(workdir / "tiny-model")
    from alignment.modeling.models import resolve_model_name_or_path

    return resolve_model_name_or_path(args.model)


def run(args) -> dict:
    import tempfile

    sizes = _sizes(args.sizes)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="domain-efficacy-"))
    model_dir = _model_dir(args, workdir)
    train, evals = _datasets(sizes, args.eval_limit)
    arms = {
        "proportional": {"domain_temperature": 1.0},
        "temperature": {"domain_temperature": args.temperature},
        "uniform": {},
    }
    if args.target_domain not in sizes:
        raise ValueError(f"--target-domain {args.target_domain!r} is not one of the domains {list(sizes)}.")
    target = sorted(sizes).index(args.target_domain)  # the trainer numbers domains in sorted-name order
    if "doremi" in args.arms and "uniform" not in args.arms:
        raise ValueError("The doremi arm uses the uniform arm's model as its reference: add `uniform` to --arms.")
    started = time.perf_counter()
    per_seed = []
    for seed in args.seeds:
        results = {}
        for name, fields in arms.items():
            if name in args.arms:
                results[name] = _train(model_dir, train, evals, workdir / f"{name}-{seed}", args, seed,
                                       domain_reweighting="static", domain_reweighting_mode="upsample", **fields)
        if "doremi" in args.arms:
            proxy = _train(model_dir, train, evals, workdir / f"doremi-proxy-{seed}", args, seed,
                           domain_reweighting="doremi", domain_reweighting_mode="upweight",
                           domain_reference_model=str(workdir / f"uniform-{seed}"))
            doremi = _train(model_dir, train, evals, workdir / f"doremi-{seed}", args, seed,
                            domain_reweighting="static", domain_reweighting_mode="upsample",
                            domain_initial_weights=proxy["average_weights"])
            doremi["proxy_train_seconds"] = proxy["train_seconds"]
            results["doremi"] = doremi
        if GENERIC_ARM in args.arms:
            generic = {d: (0.0 if d == args.target_domain else 1.0 / (len(sizes) - 1)) for d in sizes}
            results[GENERIC_ARM] = _train(model_dir, train, evals, workdir / f"{GENERIC_ARM}-{seed}", args, seed,
                                          domain_reweighting="static", domain_reweighting_mode="upweight",
                                          domain_initial_weights=generic)
        for rule, rule_kwargs in ONLINE_ARMS.items():
            if rule in args.arms:
                results[rule] = _train(model_dir, train, evals, workdir / f"{rule}-{seed}", args, seed,
                                       domain_reweighting=rule, domain_reweighting_mode="upweight",
                                       domain_reweighting_kwargs=rule_kwargs(target))
        per_seed.append(results)
    report = {"model": args.model, "sizes": sizes, "steps": args.steps, "batch_size": args.batch_size,
              "temperature": args.temperature, "seeds": args.seeds, "arms": args.arms,
              "target_domain": args.target_domain, "per_seed": per_seed,
              "mean": _mean(per_seed, list(sizes)), "wall_seconds": time.perf_counter() - started}
    return report


def _mean(per_seed: list[dict], domains: list[str]) -> dict:
    out = {}
    for arm in per_seed[0]:
        loss = {d: sum(r[arm]["loss"][d] for r in per_seed) / len(per_seed) for d in domains}
        shares = {d: sum(r[arm]["shares"][d] for r in per_seed) / len(per_seed) for d in domains}
        final = {d: sum(r[arm]["final_weights"][d] for r in per_seed) / len(per_seed) for d in domains}
        out[arm] = {"loss": loss, "worst": max(loss.values()), "average": sum(loss.values()) / len(loss),
                    "shares": shares, "final_weights": final}
    return out


def format_table(report: dict) -> str:
    domains = list(report["sizes"])
    header = ["arm", *[f"{d} (n={report['sizes'][d]})" for d in domains], "worst", "average", "shares", "final"]
    rows = []
    for arm, r in report["mean"].items():
        shares = "/".join(f"{r['shares'][d]:.2f}" for d in domains)
        final = "/".join(f"{r['final_weights'][d]:.2f}" for d in domains) if arm in ONLINE_ARMS else ""
        rows.append([arm, *[f"{r['loss'][d]:.4f}" for d in domains], f"{r['worst']:.4f}", f"{r['average']:.4f}",
                     shares, final])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    args = parse_args(argv)
    report = run(args)
    print(f"\nHeld-out token loss per domain after {args.steps} steps x batch {args.batch_size} "
          f"(mean over seeds {args.seeds}; model {args.model}):")
    print(format_table(report))
    print(f"wall time {report['wall_seconds']:.1f}s (DoReMi also trains the proxy: one extra run)")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"written to {args.out}")
    return report


if __name__ == "__main__":
    main()
