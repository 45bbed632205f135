"""`alignment-iterate` / `scripts/iterate.py`: iterative on-policy preference training, N rounds that resume.

Iterative DPO (Xiong et al., arXiv 2312.11456) and IRPO (Pang et al., arXiv 2404.19733) repeat one loop: sample
completions from the current model, score them with a verifier or reward, pair them, train on the pairs, evaluate.
Each round here is the two entry points a user would run by hand, with the model of the round before:

    round r:  generate_pairs.py (model M_{r-1}) -> <output_dir>/round-r/pairs   (train.jsonl, test.jsonl)
              run_dpo.py        (init M_{r-1}, reference M_{r-1}) -> <output_dir>/round-r/model = M_r

``init_from: base`` trains every round from the starting model instead (the reference is then that model too).
``reference: base`` keeps the starting model M_0 as the reference in every round while training from M_{r-1}
(`ref_model_name_or_path` of the round's recipe): INPO's fixed π_ref beside its round policy π_t = M_{r-1}, whose
log-probs the generator records (``generate: {record_policy_logps: true}``). A loss that reads those columns is
refused before round 1 unless both hold, since with the default reference π_ref would be π_t itself. The
recipe has two sections, `generate` (fields of `scripts/generate_pairs.py`) and `train` (fields of `scripts/run_dpo.py`
recipes, or `config:` naming one and overrides beside it); the driver sets the model, data and output paths of each
round. Nothing is lost on interruption: a round whose pairs exist (`generation.json`) does not sample again, a round
whose model finished (`eval_results.json`) is not trained again, and an interrupted training resumes from its newest
complete checkpoint. `<output_dir>/iterations.json` records every round (pairs, mean score, pass rate, held-out
accuracy before / after). The round's files (`generate.yaml`, `train.yaml`) are the exact recipes each step ran.
Single process: the driver runs both steps in this process (launch the per-round recipes with `accelerate launch`
yourself for several GPUs).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..recipe_values import as_mapping
from .packaged import resolve_recipe

logger = logging.getLogger("alignment")

# Paths the driver owns: a recipe that sets them in a section would be silently overridden, so it is refused.
_DRIVER_GENERATE_KEYS = ("model_name_or_path", "output_dir")
_DRIVER_TRAIN_KEYS = ("model_name_or_path", "dataset_name", "output_dir", "resume_from_checkpoint")
# What selects a base recipe's own data (the task suite, mixtures, splits): the round's pairs replace all of it.
_BASE_DATA_KEYS = ("dataset_config", "datasets", "dataset_mixture", "share_mixture", "task_domains",
                   "train_limit_per_domain", "task_label_noise", "task_answer_style")


@dataclass
class IterativeArguments:
    """The loop: where it starts, how many rounds, and the two sections every round runs."""

    model_name_or_path: str = field(
        default="smollm2-135m-instruct", metadata={"help": "The starting model M_0 (a path, a Hub id or an alias)."})
    output_dir: str = field(default="outputs/iterative", metadata={"help": "Rounds go to <output_dir>/round-<r>."})
    rounds: int = field(default=2, metadata={"help": "Number of generate -> train rounds."})
    init_from: str = field(
        default="previous",
        metadata={"help": "`previous`: round r trains (and is referenced) from M_{r-1}, as iterative DPO and IRPO; "
                  "`base`: every round starts from M_0 (only the pairs change)."})
    reference: str = field(
        default="init",
        metadata={"help": "`init`: the reference of round r is the model it trains from (M_{r-1}, or M_0 with "
                  "`init_from: base`), as iterative DPO; `base`: M_0 in every round (INPO's fixed pi_ref)."})
    generate: dict | str = field(
        default_factory=dict, metadata={"help": "Fields of `scripts/generate_pairs.py` (prompts, rewards, sampling)."})
    train: dict | str = field(
        default_factory=dict,
        metadata={"help": "Fields of a `scripts/run_dpo.py` recipe; `config: <recipe.yaml>` starts from that recipe."})

    def __post_init__(self):
        for name in ("generate", "train"):
            setattr(self, name, as_mapping(getattr(self, name)))
        if self.rounds < 1:
            raise ValueError(f"`rounds` must be at least 1, got {self.rounds}.")
        if self.init_from not in ("previous", "base"):
            raise ValueError(f"`init_from` must be `previous` or `base`, got {self.init_from!r}.")
        if self.reference not in ("init", "base"):
            raise ValueError(f"`reference` must be `init` or `base`, got {self.reference!r}.")
        if self.reference == "base" and "ref_model_name_or_path" in self.train:
            raise ValueError("`reference: base` sets the round's `ref_model_name_or_path` to the starting model; "
                             "remove it from `train` (or use `reference: init`).")
        for section, keys in (("generate", _DRIVER_GENERATE_KEYS), ("train", _DRIVER_TRAIN_KEYS)):
            owned = sorted(set(getattr(self, section)) & set(keys))
            if owned:
                raise ValueError(f"`{section}` sets {owned}, which the driver sets for every round (the model of the "
                                 f"round before, the round's pairs and folders): remove them from `{section}`.")


def _train_recipe(section: dict[str, Any]) -> dict[str, Any]:
    """The `train` section with its `config:` recipe expanded (the section's own fields win)."""
    section = dict(section)
    base = section.pop("config", None)

    # a path or a packaged name; `recipes/smollm2-135m/irpo.yaml` also resolves from outside a clone
    recipe = yaml.safe_load(Path(resolve_recipe(base)).read_text()) if base else {}
    for key in (*_DRIVER_TRAIN_KEYS, *_BASE_DATA_KEYS):
        recipe.pop(key, None)  # a base recipe's own data and folders are replaced by the round's
    return {**recipe, **section}


def _check_round_policy_columns(args: IterativeArguments, train_recipe: dict[str, Any]) -> None:
    """A loss reading the sampling policy's log-probs (INPO's π_t) needs the generator to write them and a reference
    other than π_t: fail before round 1 naming the setting, not after a round of sampling."""
    from ..losses import get_preference_loss
    from ..pair_generation import POLICY_LOGPS_COLUMNS

    names = train_recipe.get("loss_type", ["sigmoid"])
    readers = [name for name in ([names] if isinstance(names, str) else names)
               if set(get_preference_loss(name).requires) & set(POLICY_LOGPS_COLUMNS)]
    if not readers:
        return
    if not args.generate.get("record_policy_logps", False):
        raise ValueError(f"loss_type {readers} reads {list(POLICY_LOGPS_COLUMNS)} (the round policy's log-probs); "
                         "set `record_policy_logps: true` in the `generate` section.")
    if args.reference != "base" and args.init_from != "base":
        raise ValueError(f"loss_type {readers} needs a fixed reference beside the round policy M_{{r-1}}, but with "
                         "`reference: init` and `init_from: previous` the reference of round r is M_{r-1} itself; "
                         "set `reference: base` (the reference stays M_0).")


def _finished(model_dir: Path) -> bool:
    return (model_dir / "eval_results.json").is_file()


def iterate_main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) every round; returns the records written to `iterations.json`."""
    # Function-level: `--help` imports this module for `IterativeArguments` alone (`alignment.commands.console`).
    from ..plots import plot_iterations
    from .cli import dpo_main
    from .generate_cli import generate_main
    from .script_utils import parse_recipe

    args, *_ = parse_recipe((IterativeArguments,), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_recipe = _train_recipe(args.train)
    _check_round_policy_columns(args, train_recipe)
    records: list[dict[str, Any]] = []
    previous = args.model_name_or_path
    for r in range(1, args.rounds + 1):
        round_dir = out / f"round-{r}"
        pairs_dir, model_dir = round_dir / "pairs", round_dir / "model"
        round_dir.mkdir(parents=True, exist_ok=True)
        policy = previous  # M_{r-1} samples the pairs in both modes: the data is on-policy
        if (pairs_dir / "generation.json").is_file():
            logger.warning("round %d: pairs exist in %s, not sampled again", r, pairs_dir)
        else:
            recipe = {**args.generate, "model_name_or_path": policy, "output_dir": str(pairs_dir)}
            (round_dir / "generate.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
            generate_main(["--config", str(round_dir / "generate.yaml")])
        generation = json.loads((pairs_dir / "generation.json").read_text())
        if not generation["pairs"]:  # a resumed run finds the record of a sampling that gave no pair
            raise RuntimeError(f"round {r}: {pairs_dir} holds no pairs (every prompt's answers scored the same). "
                               "Change the `generate` section (num_samples, temperature, reward) and delete that "
                               "folder to sample again.")
        init = previous if args.init_from == "previous" else args.model_name_or_path
        if _finished(model_dir):
            logger.warning("round %d: %s already trained and evaluated, skipped", r, model_dir)
        else:
            recipe = {**train_recipe, "model_name_or_path": init, "dataset_name": str(pairs_dir),
                      "output_dir": str(model_dir), "resume_from_checkpoint": True}
            if args.reference == "base":
                recipe["ref_model_name_or_path"] = args.model_name_or_path
            if "eval_before_training" not in args.train:  # M_0's held-out score once: round r's "before" is r-1's "after"
                recipe["eval_before_training"] = r == 1
            (round_dir / "train.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
            dpo_main(["--config", str(round_dir / "train.yaml")])
        results = json.loads((model_dir / "eval_results.json").read_text())
        records.append({
            "round": r, "sampled_from": policy, "trained_from": init, "model": str(model_dir),
            "reference": args.model_name_or_path if args.reference == "base" else init,
            "pairs": generation["pairs"], "prompts": generation["prompts"],
            "prompts_without_pair": generation["prompts_without_pair"], "mean_score": generation["mean_score"],
            "pass_rate": generation["pass_rate"],
            "accuracy_before": results.get("before", {}).get("accuracy"),
            "accuracy_after": results.get("after", {}).get("accuracy"),
        })
        (out / "iterations.json").write_text(json.dumps(records, indent=2) + "\n")
        plot_iterations(out, records)  # plots/iterations.png, round after round; never raises
        previous = str(model_dir)
    return records
