"""WPO, IRPO and RPO: hand values, limits, and WPO against TRL's `use_weighting=True` on the tiny model."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from alignment.configs import PreferenceConfig
from alignment.losses import PreferenceBatch, compute_preference_loss, validate_preference_loss
from alignment.trainers import PreferenceTrainer
from alignment.testing import example_preference_batch as token_batch
from alignment.testing import make_preference_trainer as make_trainer
from alignment.testing import perturb_parameters_ as perturb_
from alignment.testing import preference_pairs as pairs


def lssp(chosen, rejected):
    """A batch with given per-token log Σ_v π(v)² (only completion positions matter)."""
    return token_batch(chosen_log_sum_sq_probs=torch.tensor(chosen), rejected_log_sum_sq_probs=torch.tensor(rejected))


def dpo(h, beta):
    return math.log1p(math.exp(-beta * h))


# ----------------------------------------------------------------------------- WPO
def test_wpo_hand_computed_weight():
    batch = lssp([[-0.5, -0.5, 9.0], [-1.5, -1.0, -0.5]], [[-1.0, 9.0, 9.0], [-1.0, -2.0, 9.0]])
    # pair 0: ā_w = mean(-0.5+0.5, -0.25+0.5) = 0.125; ā_l = -2+1 = -1 → w = exp(-0.875)
    # pair 1: ā_w = mean(0.5, 0, -0.5) = 0; ā_l = mean(0.5, 1.5) = 1 → exp(1) clamped to 1
    loss, metrics = compute_preference_loss("wpo", batch, beta=0.1)
    w = torch.tensor([math.exp(-0.875), 1.0])
    torch.testing.assert_close(metrics["wpo/weight"], w)
    torch.testing.assert_close(loss, w * torch.tensor([dpo(2.25, 0.1), dpo(-2.0, 0.1)]))
    unclamped, metrics = compute_preference_loss("wpo", batch, beta=0.1, clamp=False)
    torch.testing.assert_close(metrics["wpo/weight"], torch.tensor([math.exp(-0.875), math.e]))
    assert unclamped[1] > loss[1]


def test_wpo_with_zero_aligned_logp_is_dpo():
    batch = token_batch()
    batch = lssp(batch.chosen_logps.tolist(), batch.rejected_logps.tolist())  # ā = 0 → w = 1
    for clamp in (True, False):
        torch.testing.assert_close(compute_preference_loss("wpo", batch, beta=0.3, clamp=clamp)[0],
                                   compute_preference_loss("sigmoid", batch, beta=0.3)[0])


def test_wpo_weight_has_no_gradient():
    batch = lssp([[-0.5, -0.5, 0.0], [-1.5, -1.0, -0.5]], [[-1.0, 0.0, 0.0], [-1.0, -2.0, 0.0]])
    batch.chosen_logps.requires_grad_(True)
    loss, metrics = compute_preference_loss("wpo", batch, beta=0.1)
    loss.sum().backward()
    # d/dℓ_w of w·(−log σ(βh)) with w constant: −w·β·σ(−βh) on every completion token of the chosen side.
    expected = -metrics["wpo/weight"] * 0.1 * torch.sigmoid(-0.1 * torch.tensor([2.25, -2.0]))
    torch.testing.assert_close(batch.chosen_logps.grad, expected[:, None] * batch.chosen_mask)


def test_wpo_needs_log_sum_sq_probs():
    with pytest.raises(ValueError, match="log_sum_sq_probs"):
        compute_preference_loss("wpo", token_batch())
    validate_preference_loss("wpo", beta=0.01, clamp=False)


def test_batch_validates_log_sum_sq_probs_shape():
    with pytest.raises(ValueError, match="chosen_log_sum_sq_probs"):
        token_batch(chosen_log_sum_sq_probs=torch.zeros(2, 2))


# ----------------------------------------------------------------------------- IRPO / RPO
def test_irpo_and_rpo_hand_values():
    batch = token_batch()  # ℓ_θ(y_w) = [-0.75, -3], |y_w| = [2, 3]
    irpo, metrics = compute_preference_loss("irpo", batch, beta=0.1, alpha=0.5)
    torch.testing.assert_close(irpo, torch.tensor([dpo(2.25, 0.1) + 0.5 * 0.375, dpo(-2.0, 0.1) + 0.5 * 1.0]))
    torch.testing.assert_close(metrics["irpo/nll"], torch.tensor([0.375, 1.0]))
    rpo, metrics = compute_preference_loss("rpo", batch, beta=0.1, eta=0.5)
    # the NLL term carries β: η·β·(−ℓ_θ(y_w)) = 0.05·[0.75, 3]
    torch.testing.assert_close(rpo, torch.tensor([dpo(2.25, 0.1) + 0.05 * 0.75, dpo(-2.0, 0.1) + 0.05 * 3.0]))
    torch.testing.assert_close(metrics["rpo/nll"], torch.tensor([0.75, 3.0]))


def official_rpo_losses(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                        *, beta, eta):
    """Transcription of the official `dpo_loss` (loss_type sigmoid, no label smoothing) in
    YSLIU627/Regularized-Preference-Optimization alignment-handbook/scripts/rpo_trainer.py; logps are token sums."""
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    losses = -F.logsigmoid(beta * logits)
    losses -= policy_chosen_logps * beta * eta
    return losses


@pytest.mark.parametrize("beta, eta", [(0.01, 0.005), (0.05, 0.005), (0.5, 0.2)])
def test_rpo_matches_the_official_code_values_and_gradient(beta, eta):
    batch = token_batch()
    batch.chosen_logps.requires_grad_(True)
    ours, _ = compute_preference_loss("rpo", batch, beta=beta, eta=eta)
    ours.mean().backward()
    chosen = token_batch().chosen_logps.requires_grad_(True)
    ref = token_batch()
    official = official_rpo_losses((chosen * ref.chosen_mask).sum(-1), ref.rejected_logps_sum,
                                   ref.ref_chosen_logps_sum, ref.ref_rejected_logps_sum, beta=beta, eta=eta)
    official.mean().backward()
    torch.testing.assert_close(ours, official.detach())
    torch.testing.assert_close(batch.chosen_logps.grad, chosen.grad)


def test_nll_regularised_defaults():
    batch = token_batch()
    torch.testing.assert_close(compute_preference_loss("irpo", batch)[0],
                               compute_preference_loss("irpo", batch, beta=0.1, alpha=1.0)[0])
    torch.testing.assert_close(compute_preference_loss("rpo", batch)[0],
                               compute_preference_loss("rpo", batch, beta=0.1, eta=0.005)[0])


@pytest.mark.parametrize("name, key", [("irpo", "alpha"), ("rpo", "eta")])
def test_zero_nll_weight_is_dpo(name, key):
    batch = token_batch()
    torch.testing.assert_close(compute_preference_loss(name, batch, beta=0.2, **{key: 0.0})[0],
                               compute_preference_loss("sigmoid", batch, beta=0.2)[0])


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_irpo_equals_sigmoid_plus_weighted_sft(alpha):
    batch = token_batch()
    irpo, _ = compute_preference_loss("irpo", batch, beta=0.1, alpha=alpha)
    combined = compute_preference_loss("sigmoid", batch, beta=0.1)[0] + alpha * compute_preference_loss("sft", batch)[0]
    torch.testing.assert_close(irpo, combined)


@pytest.mark.parametrize("name, hparams", [("irpo", {"alpha": 1.0}), ("rpo", {"eta": 0.005})])
def test_nll_term_pushes_chosen_logps_up_more_than_dpo(name, hparams):
    grads = {}
    for loss_name, kwargs in ((name, hparams), ("sigmoid", {})):
        batch = token_batch()
        batch.chosen_logps.requires_grad_(True)
        compute_preference_loss(loss_name, batch, beta=0.1, **kwargs)[0].sum().backward()
        grads[loss_name] = batch.chosen_logps.grad
    mask = token_batch().chosen_mask.bool()
    assert (grads[name][mask] < grads["sigmoid"][mask]).all()
    assert (grads[name][~mask] == 0).all()


@pytest.mark.parametrize("name, key", [("irpo", "alpha"), ("rpo", "eta")])
def test_negative_nll_weight_fails_validation(name, key):
    with pytest.raises(ValueError, match=key):
        validate_preference_loss(name, **{key: -1.0})


# ----------------------------------------------------------------------------- WPO in the trainer vs TRL
def test_wpo_unclamped_matches_trl_use_weighting(tiny_model_dir, tmp_path):
    trl_trainer = make_trainer(DPOTrainer, DPOConfig, tiny_model_dir, tmp_path, pairs(), beta=0.3, use_weighting=True)
    ours = make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, pairs(), beta=0.3, loss_type="wpo",
                        loss_kwargs={"clamp": False})
    clamped = make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, pairs(), beta=0.3, loss_type="wpo")
    dpo_trainer = make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, pairs(), beta=0.3)
    for trainer in (trl_trainer, ours, clamped, dpo_trainer):
        perturb_(trainer.model)
        trainer.model.train()
    batch = next(iter(ours.get_train_dataloader()))
    trl_loss = trl_trainer.compute_loss(trl_trainer.model, dict(batch))
    our_loss = ours.compute_loss(ours.model, dict(batch))
    clamped_loss = clamped.compute_loss(clamped.model, dict(batch))
    dpo_loss = dpo_trainer.compute_loss(dpo_trainer.model, dict(batch))
    assert abs(trl_loss.item() - dpo_loss.item()) > 1e-4, "the weights must matter"
    assert abs(trl_loss.item() - our_loss.item()) < 1e-6
    weights = ours._metrics["train"]["wpo/weight"][-1]
    assert 0 < weights and clamped._metrics["train"]["wpo/weight"][-1] <= 1.0
    assert clamped_loss.item() <= our_loss.item() + 1e-7
    trl_loss.backward()
    our_loss.backward()
    for (name, p_trl), (_, p_ours) in zip(trl_trainer.model.named_parameters(), ours.model.named_parameters()):
        torch.testing.assert_close(p_ours.grad, p_trl.grad, rtol=1e-5, atol=1e-7, msg=name)
    # Generation (the non-fused forward) still works through the re-patched head.
    ours.model.eval()
    with torch.no_grad():
        logits = ours.model(input_ids=batch["input_ids"][:1]).logits
    assert logits.shape[-1] == ours.model.config.vocab_size


def test_sigmoid_trainer_does_not_request_log_sum_sq_probs(tiny_model_dir, tmp_path):
    trainer = make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, pairs())
    assert trainer._model_outputs == ()
    batch = next(iter(trainer.get_train_dataloader()))
    out = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        labels=batch["input_ids"], fused_lm_head=True)
    assert out.log_sum_sq_probs is None
