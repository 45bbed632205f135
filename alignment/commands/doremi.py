"""Two-stage DoReMi (Xie et al., NeurIPS 2023, arXiv 2305.10429) on top of the SFT recipe runner.

1. **Reference**: train a small model on the base mixture (the recipe as written).
2. **Proxy**: train a model of the same size from the same start with Group DRO over domains: each step,
   λ_i = mean over domain i's tokens of max(ℓ_proxy − ℓ_ref, 0) (per-token clipped excess loss against the frozen
   reference), α ← (1 − ε)·softmax(log α + η·λ) + ε/K, and the proxy's loss weighted by α (`upweight`, the paper's
   token weighting with uniform sampling; `--mode upsample` samples domains by α instead).
3. **Output**: ᾱ, the average of α over the proxy's steps (not the last α), written as
   - `doremi_weights.json`: ``{"domain_weights": {domain: ᾱ_i}, ...}`` (also readable by `domain_initial_weights`);
   - `share_mixture.yaml`: a `share_mixture:` recipe fragment with one source per domain at share ᾱ_i, for the
     main run (paste it into its recipe, or pass it with `--share_mixture "$(python -c ...)"`);
   - `main_recipe.yaml`: the base recipe with its data replaced by that fragment, ready to train.

Defaults follow the paper: η = 1, ε = 1e-3 (the official code's default is 1e-4; methods.md cross-check 6).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from ..redaction import is_secret_key, redact
from .packaged import resolve_recipe

# Data fields of a recipe that the fragment replaces in `main_recipe.yaml`.
_DATA_FIELDS = ("dataset_name", "task_domains", "share_mixture", "dataset_mixture", "train_limit_per_domain",
                "datasets")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True,
                        help="SFT recipe of the base mixture (needs a `domain` column): a path or a packaged name.")
    parser.add_argument("--output_dir", required=True, help="Where reference/, proxy/ and the weights go.")
    parser.add_argument("--eta", type=float, default=1.0, help="DoReMi step size η (paper: 1).")
    parser.add_argument("--eps", type=float, default=1e-3, help="DoReMi smoothing ε (paper: 1e-3; code: 1e-4).")
    parser.add_argument("--mode", choices=("upweight", "upsample"), default="upweight",
                        help="How the proxy applies α: loss weights (paper) or domain sampling.")
    parser.add_argument("--reference_max_steps", type=int, default=None, help="Override the reference's max_steps.")
    parser.add_argument("--proxy_max_steps", type=int, default=None, help="Override the proxy's max_steps.")
    args, overrides = parser.parse_known_args(argv)

    args.config = resolve_recipe(args.config)  # a path or a packaged name (`tiny/doremi`), read here and by sft_main
    return args, overrides


def run_doremi(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both stages and write the outputs; extra arguments (e.g. `--model_name_or_path`) go to both runs."""
    # Function-level: `alignment-doremi --help` is argparse in this module and should not import the trainers.
    from .cli import sft_main

    args, overrides = parse_args(argv)
    out = Path(args.output_dir)
    common = ["--config", args.config, *overrides, "--eval_after_training", "false", "--push_to_hub", "false"]

    reference_dir = out / "reference"
    sft_main([*common, "--output_dir", str(reference_dir),
              *(["--max_steps", str(args.reference_max_steps)] if args.reference_max_steps else [])])

    proxy_dir = out / "proxy"
    proxy, _ = sft_main([
        *common, "--output_dir", str(proxy_dir),
        "--domain_reweighting", "doremi", "--domain_reweighting_mode", args.mode,
        "--domain_reference_model", str(reference_dir),
        "--domain_reweighting_kwargs", json.dumps({"eta": args.eta, "eps": args.eps}),
        *(["--max_steps", str(args.proxy_max_steps)] if args.proxy_max_steps else []),
    ])
    if not proxy.accelerator.is_main_process:
        return {}
    summary = json.loads((proxy_dir / "domain_weights.json").read_text())
    weights = summary["average_weights"]
    recipe = yaml.safe_load(Path(args.config).read_text()) or {}
    fragment = {"share_mixture": mixture_fragment(recipe, weights)}
    result = {"domain_weights": weights, "final_weights": summary["final_weights"],
              "num_updates": summary["num_updates"], "eta": args.eta, "eps": args.eps, "mode": args.mode,
              "reference_model": str(reference_dir), "proxy_model": str(proxy_dir)}
    (out / "doremi_weights.json").write_text(json.dumps(result, indent=2) + "\n")
    header = (f"# DoReMi domain weights: average over {summary['num_updates']} proxy steps (eta={args.eta}, "
              f"eps={args.eps}, {args.mode}), from {args.config}\n")
    (out / "share_mixture.yaml").write_text(header + yaml.safe_dump(fragment, sort_keys=False))

    # A recipe to run, not a record: a masked `hub_token` would be sent as the token, so secrets are left out.
    main = redact({k: v for k, v in recipe.items() if k not in _DATA_FIELDS and not is_secret_key(k)})
    main.update(fragment, output_dir=str(out / "main"))
    (out / "main_recipe.yaml").write_text(header + yaml.safe_dump(main, sort_keys=False))
    print("DoReMi weights (average over proxy steps): "
          + ", ".join(f"{name}={value:.4f}" for name, value in weights.items()))
    return result


def mixture_fragment(recipe: dict[str, Any], weights: dict[str, float]) -> dict[str, Any]:
    """A `share_mixture` section giving each domain its DoReMi share.

    The base recipe's data decides the sources: `dataset_name: task-suite` gives one task-suite source per domain;
    a `share_mixture` keeps its sources and replaces each one's weight by its domain's (each source must hold a
    single domain: its `domain`, or one entry of `domains`).
    """
    if recipe.get("share_mixture"):
        base = dict(recipe["share_mixture"])
        sources = []
        for source in base.get("datasets", []):
            source = dict(source)
            domains = [source["domain"]] if source.get("domain") else list(source.get("domains") or [])
            if len(domains) != 1 or domains[0] not in weights:
                raise ValueError(f"Cannot give the mixture source {source.get('path')!r} one DoReMi weight: it holds "
                                 f"domains {domains or 'unknown'}; weights exist for {sorted(weights)}. Give each "
                                 "source a single `domain`.")
            source["weight"] = round(float(weights[domains[0]]), 6)
            sources.append(source)
        base["datasets"] = sources
        base.pop("temperature", None)
        return base
    if recipe.get("dataset_name") == "task-suite":
        return {"datasets": [{"path": "task-suite", "domains": [name], "weight": round(float(w), 6)}
                             for name, w in weights.items()],
                "policy": "upsample", "seed": int(recipe.get("seed", 0))}
    raise ValueError("The base recipe must use `dataset_name: task-suite` or a `share_mixture` with one domain per "
                     "source, so that the DoReMi weights map onto mixture sources.")

