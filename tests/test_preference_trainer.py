import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from alignment.configs import PreferenceConfig
from alignment.losses import PreferenceBatch, register_preference_loss
from alignment.trainers import PreferenceTrainer
from alignment.testing import make_preference_trainer as make_trainer
from alignment.testing import perturb_parameters_ as perturb_
from alignment.testing import preference_pairs as pairs
from alignment.testing import trainer_test_args as common_args


def test_sigmoid_matches_trl_dpo_loss_and_gradients(tiny_model_dir, tmp_path):
    dataset = pairs()
    trl_trainer = make_trainer(DPOTrainer, DPOConfig, tiny_model_dir, tmp_path, dataset, beta=0.3)
    ours = make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, dataset, beta=0.3)
    # Move both policies away from their (identical) reference models, identically, so the margin is non-zero.
    perturb_(trl_trainer.model)
    perturb_(ours.model)
    trl_trainer.model.train()
    ours.model.train()
    batch = next(iter(ours.get_train_dataloader()))
    trl_loss = trl_trainer.compute_loss(trl_trainer.model, dict(batch))
    our_loss = ours.compute_loss(ours.model, dict(batch))
    assert abs(trl_loss.item() - torch.log(torch.tensor(2.0)).item()) > 1e-3, "policy must differ from reference"
    assert abs(trl_loss.item() - our_loss.item()) < 1e-6
    trl_loss.backward()
    our_loss.backward()
    for (name, p_trl), (_, p_ours) in zip(trl_trainer.model.named_parameters(), ours.model.named_parameters()):
        torch.testing.assert_close(p_ours.grad, p_trl.grad, rtol=1e-5, atol=1e-7, msg=name)
    for key in ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
        assert abs(ours._metrics["train"][key][-1] - trl_trainer._metrics["train"][key][-1]) < 1e-5, key


def test_training_changes_parameters_and_logs_reward_metrics(tiny_model_dir, tmp_path):
    trainer = make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, pairs())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "no parameter changed"
    logged = trainer.state.log_history[-2]
    assert logged["rewards/margins"] > 0 and torch.isfinite(torch.tensor(logged["loss"]))


captured: list[PreferenceBatch] = []


@register_preference_loss("_test_capture", requires=("margin",))
def _capture_loss(batch, *, beta: float = 0.1):
    captured.append(batch)
    return -torch.nn.functional.logsigmoid(beta * batch.logratio_margin), {"margin_mean": batch.margin}


def test_extra_columns_reach_the_loss(tiny_model_dir, tmp_path):
    margins = [float(i) for i in range(8)]
    weights = [1.0, 2.0] * 4
    domains = ["add", "mul"] * 4
    dataset = pairs(margin=margins, weight=weights, domain=domains)
    trainer = make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, dataset,
                           loss_type="_test_capture", max_steps=1, dataloader_drop_last=True)
    captured.clear()
    trainer.train()
    batch = captured[0]
    assert batch.margin is not None and batch.weight is not None and batch.domain is not None
    assert set(batch.margin.tolist()) <= set(margins)
    assert set(batch.weight.tolist()) <= {1.0, 2.0}
    # Domain ids map back to the names of the rows with the same margin.
    for margin, domain_id in zip(batch.margin.tolist(), batch.domain.tolist()):
        assert trainer.domain_names[domain_id] == domains[int(margin)]
    assert "margin_mean" in trainer.state.log_history[0]


# ----------------------------------------------------------------------------- bad input fails before training
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(loss_type="dpoo"), r"Unknown preference loss_type 'dpoo'. Valid names: .*sigmoid"),
        (dict(beta=0.0), r"`beta` must be > 0"),
        (dict(beta=-1.0), r"`beta` must be > 0"),
        (dict(loss_kwargs={"gamma": 1.0}), r"\['gamma'\] are set but no selected loss"),
        (dict(f_divergence_type="js_divergence"), r"f_divergence_type.*does not implement"),
        # TRL's in-memory precompute: point at the on-disk cache that does the same pass once, across runs
        (dict(precompute_ref_log_probs=True), r"`precompute_ref_log_probs=True` .* Set `reference_cache_dir: "
                                              r"<directory>` instead: .* without any reference forward"),
        (dict(loss_type="_test_capture"), r"no `margin` column.*annotate_margins"),
    ],
)
def test_bad_config_fails_before_training(tiny_model_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, pairs(), **overrides)


def test_missing_column_names_the_column_and_fix(tiny_model_dir, tmp_path):
    dataset = pairs().rename_column("rejected", "bad")
    with pytest.raises(ValueError, match=r"no `rejected` column.*rename_column"):
        make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, dataset)


@pytest.mark.parametrize("column", ["chosen", "rejected"])
def test_empty_completion_names_the_row(tiny_model_dir, tmp_path, column):
    rows = pairs().to_list()
    rows[3][column] = [{"role": "assistant", "content": "  "}]
    with pytest.raises(ValueError, match=rf"Row 3 .* empty `{column}` completion"):
        make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, Dataset.from_list(rows))


def test_model_without_chat_template_fails_with_fix(tiny_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match=r"no chat template.*chat_template: chatml"):
        PreferenceTrainer(model=model, args=PreferenceConfig(**common_args(tmp_path)), train_dataset=pairs(),
                          processing_class=tokenizer)


def test_combined_losses_are_summed_with_loss_weights(tiny_model_dir, tmp_path):
    dataset = pairs()
    trainers = {
        "sigmoid": make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, dataset),
        "sft": make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, dataset, loss_type="sft"),
        "both": make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, dataset,
                             loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.25]),
    }
    batch = next(iter(trainers["both"].get_train_dataloader()))
    losses = {}
    for name, trainer in trainers.items():
        perturb_(trainer.model)
        trainer.model.train()
        losses[name] = trainer.compute_loss(trainer.model, dict(batch)).item()
    assert losses["sft"] > 0
    assert abs(losses["both"] - (losses["sigmoid"] + 0.25 * losses["sft"])) < 1e-5
    assert "sft/nll/chosen" in trainers["both"]._metrics["train"]


@register_preference_loss("_test_weight_metric", requires=("margin",))
def _weight_metric_loss(batch, *, beta: float = 0.1):
    return -torch.nn.functional.logsigmoid(beta * batch.logratio_margin), {"test/weight": batch.margin}


def test_instance_weight_metrics_log_mean_and_spread(tiny_model_dir, tmp_path):
    trainer = make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path,
                           pairs(margin=[0.0, 1.0, 4.0, 9.0, 2.0, 2.0, 2.0, 2.0]), loss_type="_test_weight_metric")
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.compute_loss(trainer.model, dict(batch))
    margins = [float(m) for m in batch["margin"]]
    mean = sum(margins) / len(margins)
    std = (sum((m - mean) ** 2 for m in margins) / len(margins)) ** 0.5
    assert abs(trainer._metrics["train"]["test/weight"][-1] - mean) < 1e-6
    assert abs(trainer._metrics["train"]["test/weight_std"][-1] - std) < 1e-6
