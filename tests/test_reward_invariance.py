"""Domain-invariant reward models: V-REx (arXiv 2003.00688) on per-domain Bradley-Terry risks
(`alignment.reward_objectives`), `AlignmentRewardTrainer` (TRL's loss + lambda * penalty; unset = TRL exactly), its
refusals, and a 2-step run through `alignment-reward`."""

import json
import math
from pathlib import Path

import pytest
import torch

from alignment.reward_objectives import (
    REWARD_INVARIANCE,
    invariance_penalty,
    per_domain_bt_risks,
    risk_variance,
    validate_reward_invariance,
    vrex,
)

ROOT = Path(__file__).resolve().parents[1]
LN3 = math.log(3.0)


def _bt(margin: float) -> float:
    """-log sigma(m), written out: log(1 + e^-m)."""
    return math.log1p(math.exp(-margin))


# ------------------------------------------------------------------------------------ the formula, hand-computed


def _three_domains():
    # domain 7: margins (0, 0)  -> risk log 2
    # domain 1: margin ln 3     -> risk -log(3/4) = log(4/3)
    # domain 4: margins (-ln 3, ln 3) -> (log 4 + log(4/3)) / 2
    chosen = torch.tensor([0.5, 1.0, LN3, 0.0, LN3 + 2.0], dtype=torch.float64)
    rejected = torch.tensor([0.5, 1.0, 0.0, LN3, 2.0], dtype=torch.float64)
    domains = torch.tensor([7, 7, 1, 4, 4])
    return chosen, rejected, domains


def test_per_domain_risks_by_hand():
    chosen, rejected, domains = _three_domains()
    risks = per_domain_bt_risks(chosen, rejected, domains)
    # sorted by domain id: 1, 4, 7
    expected = [math.log(4 / 3), (math.log(4.0) + math.log(4 / 3)) / 2, math.log(2.0)]
    assert risks.tolist() == pytest.approx(expected, abs=1e-12)
    assert [_bt(LN3), (_bt(-LN3) + _bt(LN3)) / 2, _bt(0.0)] == pytest.approx(expected, abs=1e-12)


def test_vrex_penalty_by_hand_is_lambda_times_population_variance():
    chosen, rejected, domains = _three_domains()
    r = [math.log(4 / 3), (math.log(4.0) + math.log(4 / 3)) / 2, math.log(2.0)]
    mean = sum(r) / 3
    variance = sum((x - mean) ** 2 for x in r) / 3  # population variance (DomainBed), not the N-1 one
    assert variance == pytest.approx(0.054092, abs=1e-6)  # (0.1013 + 0.0534 + 0.0076) / 3
    risks = per_domain_bt_risks(chosen, rejected, domains)
    assert vrex(risks=risks, step=0).item() == pytest.approx(variance, abs=1e-12)
    assert vrex(risks=risks, step=5, penalty_weight=10.0).item() == pytest.approx(10 * variance, abs=1e-12)
    penalty, _ = invariance_penalty("vrex", {"penalty_weight": 2.5}, rewards_chosen=chosen, rewards_rejected=rejected,
                                    domain_ids=domains, step=0)
    assert penalty.item() == pytest.approx(2.5 * variance, abs=1e-12)


def test_two_domains_match_the_official_code_up_to_its_factor_four():
    # official REx code (colored_mnist/main.py, --mse): (R1 - R2)^2; population variance of two = (R1 - R2)^2 / 4
    risks = torch.tensor([0.3, 1.1], dtype=torch.float64)
    assert risk_variance(risks).item() == pytest.approx((0.3 - 1.1) ** 2 / 4, abs=1e-12)


def test_zero_when_all_domain_risks_are_equal_or_one_domain():
    # every domain has the same margins: identical risks, no penalty however large lambda is
    chosen = torch.tensor([1.0, 2.0, 1.0, 2.0, 1.0, 2.0])
    rejected = torch.zeros(6)
    domains = torch.tensor([0, 0, 1, 1, 2, 2])
    assert vrex(risks=per_domain_bt_risks(chosen, rejected, domains), step=9, penalty_weight=1e6).item() == 0.0
    # one domain in the batch: nothing to compare, 0 (and still a differentiable graph)
    one = per_domain_bt_risks(chosen.requires_grad_(), rejected, torch.zeros(6, dtype=torch.long))
    out = vrex(risks=one, step=0)
    assert out.item() == 0.0 and out.requires_grad


def test_margin_is_subtracted_inside_the_sigmoid_as_trl_does():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    risks = per_domain_bt_risks(chosen, rejected, torch.tensor([0, 1]), margin=torch.tensor([2.0, 0.0]))
    assert risks.tolist() == pytest.approx([math.log(2.0), math.log(2.0)])  # 2 - 0 - 2 = 0 and 0 - 0 - 0 = 0


def test_anneal_steps_use_weight_one_first_then_lambda():
    risks = torch.tensor([0.2, 0.6])
    base = risk_variance(risks).item()  # 0.04
    assert base == pytest.approx(0.04)
    assert vrex(risks=risks, step=2, penalty_weight=100.0, anneal_steps=3).item() == pytest.approx(base)
    assert vrex(risks=risks, step=3, penalty_weight=100.0, anneal_steps=3).item() == pytest.approx(100 * base)
    assert vrex(risks=risks, step=3, penalty_weight=0.0).item() == 0.0


def test_gradient_of_the_penalty_reduces_the_spread_of_risks():
    chosen, rejected, domains = _three_domains()
    chosen = chosen.clone().requires_grad_()
    penalty = vrex(risks=per_domain_bt_risks(chosen, rejected, domains), step=0)
    penalty.backward()
    grad = chosen.grad
    # domain 1 (index 2) has the lowest risk: the penalty wants it to rise, i.e. its chosen reward to fall (grad > 0);
    # domain 4's rejected-preferred pair (index 3) has the highest risk term: its chosen reward should rise (grad < 0)
    assert grad[2] > 0 and grad[3] < 0
    # one small gradient step on the rewards lowers the variance
    with torch.no_grad():
        stepped = chosen - 0.1 * grad
    after = vrex(risks=per_domain_bt_risks(stepped, rejected, domains), step=0)
    assert after.item() < penalty.item()


def test_registry_and_value_checks():
    assert REWARD_INVARIANCE.names() == ["dial", "vrex"]
    assert REWARD_INVARIANCE.get("vrex").hparams == {"penalty_weight": 1.0, "anneal_steps": 0}
    with pytest.raises(ValueError, match="Valid names: dial, vrex"):
        validate_reward_invariance("v-rex", {})
    with pytest.raises(ValueError, match="does not take"):
        validate_reward_invariance("vrex", {"beta": 1.0})
    with pytest.raises(ValueError, match="penalty_weight"):
        validate_reward_invariance("vrex", {"penalty_weight": -1.0})
    with pytest.raises(ValueError, match="anneal_steps"):
        validate_reward_invariance("vrex", {"anneal_steps": 1.5})
    with pytest.raises(ValueError, match=r"\[B\]"):
        per_domain_bt_risks(torch.zeros(3), torch.zeros(2), torch.zeros(3))


def test_config_parses_and_refuses():
    from alignment.configs import AlignmentRewardConfig

    config = AlignmentRewardConfig(output_dir="/tmp/x", bf16=False, reward_invariance="vrex",
                                   reward_invariance_kwargs='{"penalty_weight": 3.0}')
    assert config.reward_invariance_kwargs == {"penalty_weight": 3.0}
    assert AlignmentRewardConfig(output_dir="/tmp/x", bf16=False).reward_invariance is None
    with pytest.raises(ValueError, match="reward_invariance_kwargs"):
        AlignmentRewardConfig(output_dir="/tmp/x", bf16=False, reward_invariance_kwargs={"penalty_weight": 3.0})
    with pytest.raises(ValueError, match="Unknown reward_invariance"):
        AlignmentRewardConfig(output_dir="/tmp/x", bf16=False, reward_invariance="irm")


# ------------------------------------------------------------------------------- the trainer on one real batch


def _pairs(domains):
    from datasets import Dataset

    n = len(domains)
    return Dataset.from_dict({
        "prompt": [f"Q{i}: what is {i}+{i}?" for i in range(n)],
        "chosen": [f" {2 * i}" for i in range(n)],
        "rejected": [f" {2 * i + 1} maybe" for i in range(n)],
        "domain": domains,
    })


def _trainer(tiny_model_dir, tmp_path, dataset, invariance=None, kwargs=None, cls=None):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from alignment.configs import AlignmentRewardConfig
    from alignment.trainers.reward import AlignmentRewardTrainer

    set_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = AlignmentRewardConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, report_to="none",
                                 max_length=64, reward_invariance=invariance, reward_invariance_kwargs=kwargs,
                                 use_cpu=True, bf16=False, seed=0)
    return (cls or AlignmentRewardTrainer)(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


def _batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def test_trainer_loss_is_trl_loss_plus_lambda_times_penalty(tiny_model_dir, tmp_path):
    from trl import RewardTrainer

    trainer = _trainer(tiny_model_dir, tmp_path, _pairs(["a", "b", "c", "a", "b", "c"]), "vrex",
                       {"penalty_weight": 7.0})
    batch = _batch(trainer)
    assert "domain_ids" in batch and sorted(batch["domain_ids"].tolist()) == [0, 0, 1, 1, 2, 2]
    model = trainer.model
    model.eval()
    with torch.no_grad():  # rewards of order 1, not the random head's ~1e-2: the penalty is then far above 1e-6
        model.score.weight.mul_(100.0)
    ours = trainer.compute_loss(model, dict(batch))
    plain = {k: v for k, v in batch.items() if k != "domain_ids"}
    trl_loss = RewardTrainer.compute_loss(trainer, model, dict(plain))
    # the penalty by hand from the model's rewards: per-domain mean of -log sigma(r_c - r_r), population variance
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    chosen, rejected = logits.chunk(2)
    per_domain: dict[int, list[float]] = {}
    for c, r, d in zip(chosen.tolist(), rejected.tolist(), batch["domain_ids"].tolist()):
        per_domain.setdefault(d, []).append(_bt(c - r))
    risks = [sum(v) / len(v) for v in per_domain.values()]
    mean = sum(risks) / len(risks)
    penalty = sum((x - mean) ** 2 for x in risks) / len(risks)
    assert penalty > 1e-3, penalty
    assert ours.item() == pytest.approx(trl_loss.item() + 7.0 * penalty, abs=1e-6)
    assert trainer._metrics["eval"]["invariance_penalty"][-1] == pytest.approx(7.0 * penalty, abs=1e-6)


def test_unset_is_trl_loss_exactly_and_keeps_trl_batch(tiny_model_dir, tmp_path):
    from trl import RewardTrainer

    dataset = _pairs(["a", "b", "c", "a", "b", "c"])
    ours = _trainer(tiny_model_dir, tmp_path / "ours", dataset)
    theirs = _trainer(tiny_model_dir, tmp_path / "trl", dataset, cls=RewardTrainer)
    batch = _batch(ours)
    assert "domain_ids" not in batch  # unset: TRL's collator unchanged
    ours.model.eval()
    theirs.model.eval()
    assert torch.equal(ours.compute_loss(ours.model, dict(batch)), theirs.compute_loss(theirs.model, dict(batch)))


def test_refuses_data_without_domain_or_with_one_domain(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="needs a `domain` column"):
        _trainer(tiny_model_dir, tmp_path, _pairs(["a"] * 4).remove_columns("domain"), "vrex")
    with pytest.raises(ValueError, match=r"at least two domains.*\['a'\]"):
        _trainer(tiny_model_dir, tmp_path, _pairs(["a"] * 4), "vrex")


# ----------------------------------------------------------------------------------- through alignment-reward


def test_two_step_run_through_reward_main(tiny_model_dir, tmp_path):
    from alignment.commands import reward_cli

    trainer, results = reward_cli.reward_main(["--config", str(ROOT / "recipes/tiny/reward-vrex.yaml"),
                                               "--model_name_or_path", tiny_model_dir,
                                               "--output_dir", str(tmp_path / "out")])
    assert trainer.args.reward_invariance == "vrex" and trainer.state.global_step == 2
    logged = [entry for entry in trainer.state.log_history if "invariance_penalty" in entry]
    assert len(logged) == 2 and all(math.isfinite(e["invariance_penalty"]) for e in logged)
    assert sorted(trainer.domain_names[:2]) == ["addition", "comparison"]
    saved = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert set(saved["reward"]["pairwise_accuracy"]) == {"all", "addition", "comparison"}


def test_smollm2_recipe_parses_with_the_reward_steps_config():
    from trl import DatasetMixtureConfig, ModelConfig

    from alignment.commands.console import STEPS
    from alignment.commands.script_utils import parse_recipe
    from alignment.configs import AlignmentRewardConfig, AlignmentScriptArguments

    assert "alignment.configs:AlignmentRewardConfig" in STEPS["reward"].dataclasses
    _, training_args, _, _, _ = parse_recipe(
        (AlignmentScriptArguments, AlignmentRewardConfig, ModelConfig, DatasetMixtureConfig),
        ["--config", str(ROOT / "recipes/smollm2-135m/reward-vrex.yaml")],
    )
    assert training_args.reward_invariance == "vrex"
    assert training_args.reward_invariance_kwargs == {"penalty_weight": 10.0, "anneal_steps": 10}


def test_the_recipe_on_plain_pairs_names_the_domain_column(tiny_model_dir, tmp_path):
    from alignment.commands import reward_cli

    argv = ["--config", str(ROOT / "recipes/smollm2-135m/reward-vrex.yaml"), "--model_name_or_path", tiny_model_dir,
            "--dataset_name", str(ROOT / "examples/data/preference-standard"), "--output_dir", str(tmp_path / "o"),
            "--max_steps", "1", "--bf16", "false"]
    with pytest.raises(ValueError, match="needs a `domain` column"):
        reward_cli.reward_main(argv)
    assert not (tmp_path / "o" / "config.json").exists()  # refused before any training or save
