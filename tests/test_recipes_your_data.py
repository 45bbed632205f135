"""Every shipped recipe runs on the user's data: `--config <recipe> --dataset_name <data>` trains one step.

The recipes set task-suite fields (`task_domains`, `train_limit_per_domain`, ...) for their `dataset_name:
task-suite`; pointed at other data they must drop them (with a warning) and run, as a handbook user expects. Each
recipe gets the examples/data layout of its trainer. Losses that read an extra column (`margin`, `empty_trace`,
`preference_prob`) get the preference example with that column added. QLoRA and vLLM recipes cannot run on a CPU
machine: they must get past data loading and stop with their clear "needs CUDA" / "needs vLLM" error.

Excluded: `doremi.yaml` (both sizes) is the base recipe of `scripts/run_doremi.py`, which maps the DoReMi weights onto
task-suite domains or `share_mixture` sources, so a single `--dataset_name` has nothing to reweight; its SFT stages
are covered by tests/test_domain_reweighting.py. The iterate recipes (`scripts/iterate.py`, a `rounds` field:
`iterative-dpo.yaml`, `inpo.yaml`) have no `dataset_name` of their own (the `generate` section has one, the `train`
section names a DPO recipe): `iterative-dpo.yaml` is parsed and its sections resolved here, `inpo.yaml` in
tests/test_inpo.py, and the loop itself runs in tests/test_iterate.py. `generate-pairs.yaml` (`scripts/generate_pairs.py`)
samples and scores on the user's prompts here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from alignment.commands import cli
from alignment.commands.reward_cli import reward_main
from alignment.unpaired import UNPAIRED_LOSSES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "data"
# doremi, group-dro, dga and scalebio reweight domains, which plain data has none of (group-dro runs in
# test_domain_reweighting.py, dga and scalebio in test_domain_dga_scalebio.py); reward-vrex and reward-dial compare
# domains too (their refusal of plain pairs is in test_reward_invariance.py and test_dial.py).
# Iterate recipes (a `rounds` field: iterative-dpo, inpo) are parsed below and in tests/test_inpo.py.
RECIPES = sorted(p for p in ROOT.glob("recipes/*/*.yaml")
                 if p.stem not in ("doremi", "group-dro", "dga", "scalebio", "generate-pairs", "reward-vrex",
                                  "reward-dial")
                 and "rounds" not in (yaml.safe_load(p.read_text()) or {}))
MAINS = {"dpo": cli.dpo_main, "kto": cli.kto_main, "sft": cli.sft_main, "grpo": cli.grpo_main,
         "reward": reward_main}
LAYOUTS = {"dpo": "preference-standard", "kto": "unpaired", "sft": "sft-messages", "grpo": "prompts-standard",
           "reward": "preference-standard"}
# Extra per-row columns some losses read, with a value each example row gets.
EXTRA_COLUMNS = {"margin": 0.5, "empty_trace": 0, "preference_prob": 0.8}


def _trainer(recipe: dict, path: Path) -> str:
    """The script a recipe is for (its header names `scripts/run_<trainer>.py`), from the fields only it has."""
    if "advantage_estimator" in recipe:
        return "grpo"
    if isinstance(recipe.get("loss_type"), str) and recipe["loss_type"] in UNPAIRED_LOSSES:
        return "kto"
    if "loss_type" in recipe:
        return "dpo"
    return "reward" if path.stem.startswith("reward") else "sft"


def _needs_cuda(recipe: dict) -> bool:
    return bool(recipe.get("load_in_4bit") or recipe.get("load_in_8bit")) and not torch.cuda.is_available()


def _needs_vllm(recipe: dict) -> bool:
    from trl.import_utils import is_vllm_available

    return bool(recipe.get("use_vllm")) and not is_vllm_available()


def _required_columns(recipe: dict) -> list[str]:
    from alignment.losses import get_preference_loss

    loss_types = recipe.get("loss_type") or []
    loss_types = [loss_types] if isinstance(loss_types, str) else loss_types
    return sorted({c for name in loss_types for c in get_preference_loss(name).requires_columns})


def _data_for(recipe: dict, trainer: str, tmp_path: Path) -> Path:
    """The examples/data layout of the trainer; a copy with the loss's extra columns where it needs them."""
    source = EXAMPLES / LAYOUTS[trainer]
    columns = _required_columns(recipe) if trainer == "dpo" else []
    if not columns:
        return source
    target = tmp_path / "data"
    target.mkdir()
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (source / f"{split}.jsonl").read_text().splitlines()]
        (target / f"{split}.jsonl").write_text(
            "".join(json.dumps({**row, **{c: EXTRA_COLUMNS[c] for c in columns}}) + "\n" for row in rows))
    return target


@pytest.mark.parametrize("path", RECIPES, ids=[f"{p.parent.name}/{p.stem}" for p in RECIPES])
def test_every_recipe_runs_on_your_data(path, tiny_model_dir, tmp_path, caplog):
    recipe = yaml.safe_load(path.read_text())
    trainer = _trainer(recipe, path)
    data = _data_for(recipe, trainer, tmp_path)
    out = tmp_path / "out"
    argv = ["--config", str(path), "--model_name_or_path", tiny_model_dir, "--dataset_name", str(data),
            "--output_dir", str(out), "--max_steps", "1", "--save_strategy", "no", "--eval_before_training", "false",
            "--eval_after_training", "false"]
    if _needs_cuda(recipe):
        with pytest.raises(ValueError, match=r"needs a CUDA GPU"):
            MAINS[trainer](argv)
        return
    if _needs_vllm(recipe):
        with pytest.raises(ImportError, match=r"vLLM is not available"):
            MAINS[trainer](argv)
        return
    with caplog.at_level(logging.WARNING, logger="alignment"):
        trained, _ = MAINS[trainer](argv)
    assert trained.state.global_step == 1
    assert (out / "eval_results.json").exists()
    dropped = [r.getMessage() for r in caplog.records if "only describe `dataset_name: task-suite`" in r.getMessage()]
    if recipe.get("task_domains"):
        assert len(dropped) == 1 and "`task_domains`" in dropped[0], dropped


def test_recipes_with_extra_columns_name_the_column_on_plain_pairs(tiny_model_dir, tmp_path):
    # Without the column the loss needs, the run stops before the model is loaded and says what to add.
    argv = ["--config", str(ROOT / "recipes/smollm2-135m/irepo.yaml"), "--model_name_or_path", tiny_model_dir,
            "--dataset_name", str(EXAMPLES / "preference-standard"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="no `preference_prob` column"):
        cli.dpo_main(argv)


def test_your_data_recipes_have_no_task_suite_fields_and_run_as_shipped(tiny_model_dir, tmp_path):
    from alignment.data_loading import TASK_SUITE_FIELDS

    shipped = sorted(ROOT.glob("recipes/your-data/*.yaml"))
    assert {p.stem for p in shipped} == {"dpo", "sft", "reward", "grpo"}
    for path in shipped:
        recipe = yaml.safe_load(path.read_text())
        assert not set(TASK_SUITE_FIELDS) & set(recipe), path
        assert (ROOT / recipe["dataset_name"]).is_dir(), path  # points at a shipped example by default
        assert f"scripts/run_{path.stem}.py" in path.read_text()
        out = tmp_path / path.stem
        trained, _ = MAINS[path.stem](["--config", str(path), "--model_name_or_path", tiny_model_dir,
                                       "--output_dir", str(out), "--max_steps", "1", "--save_strategy", "no"])
        assert trained.state.global_step == 1


def test_generate_pairs_recipe_samples_and_scores_your_prompts(tiny_model_dir, tmp_path):
    from alignment.commands.generate_cli import generate_main

    out = tmp_path / "pairs"
    argv = ["--config", str(ROOT / "recipes/smollm2-135m/generate-pairs.yaml"), "--model_name_or_path",
            tiny_model_dir, "--dataset_name", str(EXAMPLES / "prompts-conversational"), "--output_dir", str(out),
            "--num_samples", "2", "--max_new_tokens", "4"]
    # A random model never gets a `solution` right: every completion scores 0, so the run ends without pairs, after
    # loading the user's prompts (task-suite fields dropped), sampling and scoring every one with math-verify.
    with pytest.raises(RuntimeError, match="No pairs"):
        generate_main(argv)
    generation = json.loads((out / "generation.json").read_text())
    assert generation["prompts"] == 8 and generation["completions"] == 16 and generation["mean_score"] == 0.0


def test_iterative_recipe_parses_and_its_train_section_resolves():
    from alignment.commands.iterate_cli import IterativeArguments, _train_recipe
    from alignment.commands.script_utils import parse_recipe

    args = parse_recipe((IterativeArguments,), ["--config", str(ROOT / "recipes/smollm2-135m/iterative-dpo.yaml")])[0]
    train = _train_recipe(args.train)
    assert train["loss_type"] == "irpo" and train["max_steps"] == 20 and "task_domains" not in train
    assert args.generate["reward_funcs"] == ["math_verify_reward"] and args.rounds == 2
