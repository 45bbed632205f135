"""Every registered preference loss trains through `PreferenceTrainer`, and has a SmolLM2-135M recipe.

One parametrized smoke test per loss in the registry (so a newly registered loss is covered without editing this
file): 3 optimiser steps of the tiny model on a few pairs, then
- some parameter changed,
- every logged loss is finite,
- the loss-specific metrics the loss returns (found by evaluating it once on a dummy batch) were logged.

And one test per loss that `recipes/smollm2-135m/` has a recipe selecting it, which TRL's parser accepts into our
dataclasses (parsing only, no training).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.configs import PreferenceConfig
from alignment.losses import PreferenceBatch, compute_preference_loss, get_preference_loss, list_preference_losses
from alignment.trainers import PreferenceTrainer
from alignment.trainers.preference_config import resolve_loss_hparams
from alignment.testing import preference_pairs

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "smollm2-135m"
LOSSES = [name for name in list_preference_losses() if not name.startswith("_test")]
# Dataset columns the test can synthesise for losses that require them (`madpo` needs a reward-model margin).
SYNTHETIC_COLUMNS = {"margin": [0.5, -1.0, 3.0, 1.5, 8.0, -3.0], "empty_trace": [0, 1, 1, 0, 0, 1],
                     "preference_prob": [0.9, 0.6, 0.5, 0.75, 1.0, 0.3],
                     "round_chosen_logps": [-12.0, -8.5, -20.0, -5.0, -9.0, -15.0],
                     "round_rejected_logps": [-10.0, -11.0, -18.5, -7.5, -9.0, -30.0]}
N_PAIRS = 6
# Config fields a loss cannot train without: TRL's DPOTrainer refuses `exo_pair` with label_smoothing = 0 (log ε).
REQUIRED_ARGS = {"exo_pair": {"label_smoothing": 1e-3}}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The tiny model and tokenizer, loaded once per module; each test trains a deep copy."""
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def loss_metric_names(name: str) -> set[str]:
    """The metric keys `name` returns, from one evaluation on a dummy one-pair batch (as registry validation does)."""
    spec = get_preference_loss(name)
    zeros = torch.zeros(1)
    extras = {column: zeros.clone() for column in spec.requires_columns}
    if "turn_ids" in spec.requires_token_annotations:
        extras.update(chosen_turn_ids=torch.zeros(1, 1, dtype=torch.long),
                      rejected_turn_ids=torch.zeros(1, 1, dtype=torch.long))
    if "log_sum_sq_probs" in spec.requires_model_outputs:
        extras.update(chosen_log_sum_sq_probs=zeros.view(1, 1) - 1.0, rejected_log_sum_sq_probs=zeros.view(1, 1) - 1.0)
    if "token_kl" in spec.requires_reference_outputs:
        extras.update(chosen_token_kl=zeros.view(1, 1), rejected_token_kl=zeros.view(1, 1))
    if "sparse_masks" in spec.requires_reference_outputs:
        extras.update({f"{side}_{mask}": zeros.view(1, 1) + 1.0 for side in ("chosen", "rejected")
                       for mask in ("reward_mask", "kl_mask")})
    dummy = PreferenceBatch.from_sequence_logps(zeros - 1.0, zeros - 2.0, zeros - 1.5, zeros - 1.5, **extras)
    _, metrics = compute_preference_loss(name, dummy)
    return set(metrics)


@pytest.mark.parametrize("loss_type", LOSSES)
def test_every_loss_trains_three_steps(tiny, tmp_path, loss_type):
    model, tokenizer = tiny
    spec = get_preference_loss(loss_type)
    missing = [column for column in spec.requires_columns if column not in SYNTHETIC_COLUMNS]
    assert not missing, f"add synthetic values for {missing} to SYNTHETIC_COLUMNS so {loss_type!r} is tested"
    dataset = preference_pairs(N_PAIRS, **{column: SYNTHETIC_COLUMNS[column] for column in spec.requires_columns})
    args = PreferenceConfig(
        output_dir=str(tmp_path / "out"), loss_type=loss_type, per_device_train_batch_size=2, max_steps=3,
        learning_rate=1e-2, logging_steps=1, report_to="none", bf16=False, use_cpu=True, seed=0, save_strategy="no",
        max_length=64, dataloader_drop_last=True, **REQUIRED_ARGS.get(loss_type, {}),
    )
    trainer = PreferenceTrainer(model=copy.deepcopy(model), args=args, train_dataset=dataset,
                                processing_class=tokenizer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    assert trainer.state.global_step == 3
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, f"{loss_type}: no parameter changed in 3 steps"

    history = trainer.state.log_history
    step_logs = [entry for entry in history if "loss" in entry]
    assert len(step_logs) == 3, history
    losses = [entry["loss"] for entry in step_logs]
    losses += [entry["train_loss"] for entry in history if "train_loss" in entry]
    assert all(math.isfinite(value) for value in losses), f"{loss_type}: non-finite loss in {losses}"

    expected = loss_metric_names(loss_type) | {"rewards/margins", "logps/chosen"}
    for key in sorted(expected):
        values = [entry[key] for entry in step_logs if key in entry]
        assert len(values) == 3, f"{loss_type}: metric {key!r} logged at {len(values)} of 3 steps"
        assert all(math.isfinite(value) for value in values), f"{loss_type}: {key} = {values}"


# ----------------------------------------------------------------------------- recipes
def recipe_loss_types() -> dict[str, list[Path]]:
    """loss name -> the recipes under recipes/smollm2-135m/ whose `loss_type` names it (alone or in a list)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(RECIPES.glob("*.yaml")):
        loss_type = (yaml.safe_load(path.read_text()) or {}).get("loss_type")
        if loss_type is None:
            continue
        for name in [loss_type] if isinstance(loss_type, str) else loss_type:
            found.setdefault(name, []).append(path)
    return found


def _needs_extra_data(name: str) -> bool:
    return bool(get_preference_loss(name).requires_columns)


@pytest.mark.parametrize("loss_type", LOSSES)
def test_every_loss_has_a_parsable_recipe(loss_type):
    from trl import DatasetMixtureConfig, ModelConfig

    from alignment.configs import AlignmentScriptArguments
    from alignment.commands.script_utils import parse_recipe

    recipes = recipe_loss_types().get(loss_type, [])
    if not recipes and _needs_extra_data(loss_type):
        pytest.skip(f"{loss_type!r} needs extra columns {get_preference_loss(loss_type).requires_columns}")
    assert recipes, f"no recipe under {RECIPES.relative_to(ROOT)} has `loss_type` {loss_type!r}"
    for path in recipes:
        script_args, training_args, model_args, mixture_args, recipe = parse_recipe(
            (AlignmentScriptArguments, PreferenceConfig, ModelConfig, DatasetMixtureConfig),
            ["--config", str(path)],
        )
        assert isinstance(training_args, PreferenceConfig)
        assert loss_type in training_args.loss_type
        assert model_args.model_name_or_path == "smollm2-135m-instruct"
        # The hyper-parameters the recipe sets are ones the selected losses take (what the trainer checks first).
        resolve_loss_hparams(training_args)
