"""KTO and TRL's unpaired loss types (`alignment.unpaired`, `alignment.trainers.kto`, `alignment-kto`).

The pure losses against hand-computed values; the trainer's loss and gradients against TRL 1.16's own `KTOTrainer` on
the same batch; end-to-end runs of the tiny recipe on unpaired and on paired example data; the bad-layout error.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from alignment.commands import cli
from alignment.configs import KTOAlignmentConfig
from alignment.data_layouts import unpaired_split
from alignment.unpaired import UNPAIRED_LOSSES, kl_reference_point

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "data"


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


LOGRATIOS = [1.0, -2.0, 0.5, 3.0]
LABELS = [True, False, True, False]


# ------------------------------------------------------------------------------------------------ the pure losses
def test_kto_matches_hand_computed_values_for_desirable_and_undesirable_rows():
    beta, z, lam_d, lam_u = 0.5, 0.7, 2.0, 0.5
    losses = UNPAIRED_LOSSES.get("kto").fn(torch.tensor(LOGRATIOS), torch.tensor(LABELS),
                                           reference_point=torch.tensor(z), beta=beta, desirable_weight=lam_d,
                                           undesirable_weight=lam_u)
    expected = [lam_d * (1 - _sigmoid(beta * (r - z))) if good else lam_u * (1 - _sigmoid(beta * (z - r)))
                for r, good in zip(LOGRATIOS, LABELS)]
    # by hand, row 0: 2 * (1 - σ(0.5 * 0.3)) = 2 * (1 - 0.537430) = 0.925140
    assert expected[0] == pytest.approx(0.925140, abs=1e-6)
    torch.testing.assert_close(losses, torch.tensor(expected), atol=1e-6, rtol=0)


def test_apo_zero_unpaired_matches_hand_computed_values():
    beta = 0.5
    losses = UNPAIRED_LOSSES.get("apo_zero_unpaired").fn(torch.tensor(LOGRATIOS), torch.tensor(LABELS), beta=beta,
                                                         desirable_weight=1.5, undesirable_weight=0.25)
    expected = [1.5 * (1 - _sigmoid(beta * r)) if good else 0.25 * _sigmoid(beta * r)
                for r, good in zip(LOGRATIOS, LABELS)]
    torch.testing.assert_close(losses, torch.tensor(expected), atol=1e-6, rtol=0)
    assert not UNPAIRED_LOSSES.get("apo_zero_unpaired").uses_reference_point
    assert UNPAIRED_LOSSES.get("kto").uses_reference_point


def test_reference_point_is_the_detached_mean_kl_clamped_at_zero_and_averaged_over_ranks():
    policy = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    z = kl_reference_point(policy, torch.tensor([-1.5, -2.5, -2.0]))  # log-ratios 0.5, 0.5, -1.0: mean 0
    assert z.item() == pytest.approx(0.0) and not z.requires_grad
    z = kl_reference_point(policy, torch.tensor([-2.0, -3.0, -4.0]))  # mean 1.0
    assert z.item() == pytest.approx(1.0) and not z.requires_grad
    assert kl_reference_point(policy, torch.tensor([0.0, 0.0, 0.0])).item() == 0.0  # mean -2 clamps at 0
    # TRL's reduction: this rank's mean (1.0), gathered with another rank's mean (3.0), averaged, then clamped
    other_rank = torch.tensor(3.0)
    z = kl_reference_point(policy, torch.tensor([-2.0, -3.0, -4.0]),
                           gather=lambda t: torch.stack([t.reshape(()), other_rank]))
    assert z.item() == pytest.approx(2.0)
    z = kl_reference_point(policy, torch.tensor([0.0, 0.0, 0.0]),
                           gather=lambda t: torch.stack([t.reshape(()), torch.tensor(1.0)]))
    assert z.item() == 0.0  # (-2 + 1) / 2 < 0: clamped after the cross-rank mean, not per rank


def test_kto_gradient_raises_desirable_and_lowers_undesirable_log_ratios():
    logratios = torch.tensor(LOGRATIOS, requires_grad=True)
    UNPAIRED_LOSSES.get("kto").fn(logratios, torch.tensor(LABELS), reference_point=torch.tensor(0.2)).sum().backward()
    grad = logratios.grad
    assert (grad[[0, 2]] < 0).all()  # a higher desirable log-ratio lowers the loss
    assert (grad[[1, 3]] > 0).all()  # a higher undesirable log-ratio raises it
    # and moving a desirable log-ratio up does lower the loss
    fn = UNPAIRED_LOSSES.get("kto").fn
    z = torch.tensor(0.2)
    base = fn(torch.tensor([1.0]), torch.tensor([True]), reference_point=z)
    assert fn(torch.tensor([1.5]), torch.tensor([True]), reference_point=z) < base


def test_bad_hyper_parameters_and_unknown_names_fail_when_the_recipe_is_parsed(tmp_path):
    with pytest.raises(ValueError, match="Valid names: apo_zero_unpaired, kto"):
        KTOAlignmentConfig(output_dir=str(tmp_path), loss_type="ktoo")
    with pytest.raises(ValueError, match="`beta` must be a number > 0"):
        KTOAlignmentConfig(output_dir=str(tmp_path), beta=0.0)
    with pytest.raises(ValueError, match="does not take"):
        KTOAlignmentConfig(output_dir=str(tmp_path), loss_kwargs={"gamma": 1.0})


# ------------------------------------------------------------------------------------- the same numbers as TRL
@pytest.mark.parametrize("loss_type,precompute,lora", [("kto", False, False), ("apo_zero_unpaired", False, False),
                                                       ("kto", True, False), ("kto", False, True)],
                         ids=["kto", "apo_zero_unpaired", "kto-precomputed-reference", "kto-lora-adapter-off-reference"])
def test_loss_and_gradients_equal_trl_kto_trainer_on_the_same_batch(tiny_model_dir, tmp_path, loss_type, precompute,
                                                                    lora):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    from alignment.trainers.kto import KTOAlignmentTrainer

    rows = [json.loads(line) for line in (EXAMPLES / "unpaired" / "train.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    common = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=64, report_to="none",
                  bf16=False, gradient_checkpointing=False, loss_type=loss_type, beta=0.3, desirable_weight=1.3,
                  undesirable_weight=0.8, precompute_ref_log_probs=precompute)
    trainers = [cls(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=config_cls(**common),
                    train_dataset=dataset, processing_class=tokenizer,
                    peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]) if lora else None)
                for cls, config_cls in ((KTOTrainer, KTOConfig), (KTOAlignmentTrainer, KTOAlignmentConfig))]
    batch = next(iter(trainers[0].get_train_dataloader()))
    assert {True, False} <= set(batch["label"].tolist())
    assert ("KL_input_ids" in batch) == (loss_type == "kto")
    assert ("ref_logps" in batch) == precompute
    # A policy that differs from the reference, so that the log-ratios are not zero; for `kto`, a perturbation whose
    # KL estimate on the mismatched pairs is positive, so that z_ref is active rather than clamped at 0.
    initial = {k: v.clone() for k, v in trainers[0].model.state_dict().items()}
    for seed in range(20):
        for trainer in trainers:
            trainer.model.load_state_dict(initial)
            with torch.no_grad():
                for i, param in enumerate(trainer.model.parameters()):
                    generator = torch.Generator().manual_seed(1000 * seed + i)
                    param.add_(0.02 * torch.randn(param.shape, generator=generator))
            trainer.model.train()
        with torch.no_grad():
            trainers[0].compute_loss(trainers[0].model, batch)
        if loss_type != "kto" or trainers[0]._metrics["train"]["kl"][-1] > 0:
            break
    assert loss_type != "kto" or trainers[0]._metrics["train"]["kl"][-1] > 0
    trainers[0]._metrics["train"].clear()
    trainers[0]._total_train_tokens = 0  # the search above counted its tokens
    losses = []
    for trainer in trainers:
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        losses.append(loss)
    trl_metrics, our_metrics = (dict(trainer._metrics["train"]) for trainer in trainers)
    assert losses[0].item() > 0
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=0)
    assert sum(param.grad is not None for param in trainers[1].model.parameters()) >= (4 if lora else 10)
    for (name, ours), theirs in zip(trainers[1].model.named_parameters(), trainers[0].model.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-6, rtol=0, msg=lambda m: f"{name}: {m}")
    assert our_metrics.keys() == trl_metrics.keys()
    for key in trl_metrics:
        assert our_metrics[key] == pytest.approx(trl_metrics[key], abs=1e-6), key


# ---------------------------------------------------------------------------------------------------------- data
def test_paired_rows_are_unpaired_with_trl_and_other_layouts_fail_naming_the_columns(caplog):
    pairs = Dataset.from_list([json.loads(line) for line in
                               (EXAMPLES / "preference-standard" / "train.jsonl").read_text().splitlines()])
    with caplog.at_level(logging.INFO, logger="alignment"):
        rows = unpaired_split(pairs)
    assert "unpair_preference_dataset" in caplog.text
    assert len(rows) == 2 * len(pairs) and sum(rows["label"]) == len(pairs)
    expected = {(p["prompt"], p["chosen"], True) for p in pairs} | {(p["prompt"], p["rejected"], False) for p in pairs}
    assert {(r["prompt"], r["completion"], r["label"]) for r in rows} == expected
    assert len(set(rows["label"][:4])) == 2  # shuffled: the first batch is not all desirable

    unpaired = Dataset.from_list([{"prompt": "p", "completion": "c", "label": True}])
    assert unpaired_split(unpaired) is unpaired
    with pytest.raises(ValueError, match=r"columns \['messages'\].*\['prompt', 'completion', 'label'\]"):
        unpaired_split(Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}]))


# ---------------------------------------------------------------------------------------------------- end to end
def _argv(model_dir, data, out, *extra):
    return ["--config", str(ROOT / "recipes/tiny/kto.yaml"), "--model_name_or_path", model_dir,
            "--dataset_name", str(data), "--output_dir", str(out), "--eval_before_training", "false", *extra]


@pytest.mark.parametrize("layout", ["unpaired", "preference-standard"])
def test_two_steps_of_the_tiny_recipe_through_the_cli(tiny_model_dir, tmp_path, layout):
    out = tmp_path / "out"
    trainer, results = cli.kto_main(_argv(tiny_model_dir, EXAMPLES / layout, out))
    assert trainer.state.global_step == 2
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    card = (out / "README.md").read_text()
    assert "Kahneman-Tversky Optimization" in card and "2402.01306" in card  # the method and its paper
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all(math.isfinite(entry["loss"]) and "kl" in entry for entry in logged)
    assert "eval_loss" in results["eval"]  # the held-out split, unpaired too


def test_a_layout_that_is_neither_unpaired_nor_paired_fails_before_training(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"has columns \['messages'\].*unpaired"):
        cli.kto_main(_argv(tiny_model_dir, EXAMPLES / "sft-messages", tmp_path / "out"))
    assert not (tmp_path / "out" / "model.safetensors").exists()
