"""Reference-free losses (simpo, cpo, orpo) against TRL 1.16's own implementations, by hand, and in the trainer.

TRL anchors: `CPOTrainer.cpo_loss` (trl/experimental/cpo/cpo_trainer.py:678, loss types "sigmoid" and "simpo") and
`ORPOTrainer.odds_ratio_loss` (trl/experimental/orpo/orpo_trainer.py:670) are called as unbound methods with a
minimal stand-in ``self``, on the sequence log-probs TRL's ``get_batch_logps`` would give (sums for CPO "sigmoid",
token means for "simpo" and ORPO). TRL's NLL terms (cpo_trainer.py:842-846 and :890, orpo_trainer.py:801 and
``loss = policy_nll_loss - losses.mean()``) are a cross-entropy pooled over the batch's tokens, i.e.
``−Σ logp / Σ mask``; on a batch of equal chosen lengths and no prompt tokens that equals our per-example mean.
"""

import math
import os
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402

from alignment.configs import PreferenceConfig  # noqa: E402
from alignment.losses import PreferenceBatch, compute_preference_loss, get_preference_loss  # noqa: E402
from alignment.testing import example_preference_batch, make_preference_trainer  # noqa: E402
from alignment.testing import preference_pairs as pairs  # noqa: E402
from alignment.trainers import PreferenceTrainer  # noqa: E402

CPU = SimpleNamespace(device=torch.device("cpu"))


def random_batch(seed, b=6, t=7, equal_chosen=False, reference=True):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (2, b), generator=g)
    if equal_chosen:
        lengths[0] = t
    ar = torch.arange(t)
    cm, rm = (ar < lengths[0, :, None]).double(), (ar < lengths[1, :, None]).double()

    def lp(mask):
        return -torch.rand(b, t, generator=g, dtype=torch.float64) * 2 * mask
    chosen, rejected = lp(cm).requires_grad_(True), lp(rm).requires_grad_(True)
    refs = (lp(cm), lp(rm)) if reference else (None, None)
    return PreferenceBatch(chosen, rejected, *refs, cm, rm)


def ours(name, batch, **hparams):
    loss, _ = compute_preference_loss(name, batch, **hparams)
    loss = loss.mean()
    return (loss, *torch.autograd.grad(loss, [batch.chosen_logps, batch.rejected_logps]))


def trl_cpo(batch, *, loss_type, beta, alpha=0.0, gamma=0.5, label_smoothing=0.0):
    self = SimpleNamespace(alpha=0.0, loss_type=loss_type, beta=beta, simpo_gamma=gamma,
                           label_smoothing=label_smoothing, accelerator=CPU)
    chosen, rejected = batch.chosen_logps_sum, batch.rejected_logps_sum
    if loss_type == "simpo":  # average_log_prob=True for simpo (cpo_trainer.py:850)
        chosen, rejected = chosen / batch.chosen_lengths, rejected / batch.rejected_lengths
    losses, _, _ = CPOTrainer.cpo_loss(self, chosen, rejected)
    nll = -batch.chosen_logps_sum.sum() / batch.chosen_mask.sum()  # pooled CE over chosen tokens
    loss = losses.mean() + alpha * nll
    return (loss, *torch.autograd.grad(loss, [batch.chosen_logps, batch.rejected_logps]))


def trl_orpo(batch, *, beta):
    self = SimpleNamespace(beta=beta, accelerator=CPU)
    chosen = batch.chosen_logps_sum / batch.chosen_lengths
    rejected = batch.rejected_logps_sum / batch.rejected_lengths
    losses, *_ = ORPOTrainer.odds_ratio_loss(self, chosen, rejected)
    nll = -batch.chosen_logps_sum.sum() / batch.chosen_mask.sum()
    loss = nll - losses.mean()
    return (loss, *torch.autograd.grad(loss, [batch.chosen_logps, batch.rejected_logps]))


def assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.double(), y.double(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_simpo_matches_trl_cpo_simpo(seed, label_smoothing):
    batch = random_batch(seed)
    assert_same(ours("simpo", batch, beta=2.0, gamma=0.7, label_smoothing=label_smoothing),
                trl_cpo(batch, loss_type="simpo", beta=2.0, gamma=0.7, label_smoothing=label_smoothing))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cpo_preference_term_matches_trl_on_any_lengths(seed):
    batch = random_batch(seed)
    assert_same(ours("cpo", batch, beta=0.3, alpha=0.0), trl_cpo(batch, loss_type="sigmoid", beta=0.3))


@pytest.mark.parametrize("seed", [0, 1])
def test_cpo_with_nll_matches_trl_on_equal_chosen_lengths(seed):
    batch = random_batch(seed, equal_chosen=True)
    assert_same(ours("cpo", batch, beta=0.1, alpha=1.0), trl_cpo(batch, loss_type="sigmoid", beta=0.1, alpha=1.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orpo_matches_trl_on_equal_chosen_lengths(seed):
    batch = random_batch(seed, equal_chosen=True)
    assert_same(ours("orpo", batch, beta=0.25), trl_orpo(batch, beta=0.25))


def test_hand_values():
    # example_preference_batch: chosen sums [-0.75, -3], lengths [2, 3]; rejected sums [-2, -1], lengths [1, 2].
    batch = example_preference_batch()
    logsig = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    # SimPO: means chosen [-0.375, -1], rejected [-2, -0.5]; β=2, γ=0.5 -> z = 2·[1.625, -0.5] - 0.5 = [2.75, -1.5]
    simpo, _ = compute_preference_loss("simpo", batch, beta=2.0, gamma=0.5)
    assert simpo.tolist() == pytest.approx([-logsig(2.75), -logsig(-1.5)], abs=1e-6)
    # CPO: β=0.1 on sum margins [1.25, -2]; NLL = [0.375, 1]
    cpo, _ = compute_preference_loss("cpo", batch, beta=0.1, alpha=1.0)
    assert cpo.tolist() == pytest.approx([-logsig(0.125) + 0.375, -logsig(-0.2) + 1.0], abs=1e-6)
    # ORPO: log odds(p) = l − log(1 − e^l) on the means
    def log_odds(mean):
        return mean - math.log(1 - math.exp(mean))
    expected = [0.375 - 0.1 * logsig(log_odds(-0.375) - log_odds(-2.0)),
                1.0 - 0.1 * logsig(log_odds(-1.0) - log_odds(-0.5))]
    orpo, _ = compute_preference_loss("orpo", batch, beta=0.1)
    assert orpo.tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ["simpo", "cpo", "orpo", "sft"])
def test_reference_free_losses_accept_a_batch_without_reference(name):
    assert get_preference_loss(name).reference_free
    with_ref, without = random_batch(3), random_batch(3, reference=False)
    a, _ = compute_preference_loss(name, with_ref)
    b, _ = compute_preference_loss(name, without)
    torch.testing.assert_close(a, b)


def test_reference_loss_on_a_reference_free_batch_is_a_clear_error():
    assert not get_preference_loss("sigmoid").reference_free
    with pytest.raises(ValueError, match="reference log-probs.*reference-free"):
        compute_preference_loss("sigmoid", random_batch(0, reference=False))


# ------------------------------------------------------------------ trainer: no reference model at all
def _trainer(tiny_model_dir, tmp_path, **overrides):
    return make_preference_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, pairs(),
                                   **overrides)


@pytest.mark.parametrize("loss_type", [["simpo"], ["orpo"], ["cpo"], ["simpo", "sft"]])
def test_reference_free_run_builds_and_runs_no_reference(tiny_model_dir, tmp_path, monkeypatch, loss_type):
    forwards = []
    original = PreferenceTrainer._reference_token_logps
    monkeypatch.setattr(PreferenceTrainer, "_reference_token_logps",
                        lambda self, *a, **k: forwards.append(1) or original(self, *a, **k))
    trainer = _trainer(tiny_model_dir, tmp_path, loss_type=loss_type, beta=2.0 if loss_type == ["simpo"] else 0.1,
                       loss_weights=[1.0] * len(loss_type))
    assert trainer.ref_model is None
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert forwards == [], "a reference forward ran"
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters()), "nothing trained"
    assert math.isfinite(trainer.state.log_history[-2]["loss"])


def test_mixing_with_a_reference_loss_keeps_the_reference(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, loss_type=["simpo", "sigmoid"], loss_weights=[1.0, 1.0], max_steps=1)
    assert trainer.ref_model is not None
    trainer.train()


@pytest.mark.parametrize("option", ["sync_ref_model", "reference_cache_dir"])
def test_reference_free_refuses_reference_options(tiny_model_dir, tmp_path, option):
    value = True if option == "sync_ref_model" else str(tmp_path / "cache")
    with pytest.raises(ValueError, match=f"`{option}` is set but loss_type \\['simpo'\\] is reference-free"):
        _trainer(tiny_model_dir, tmp_path, loss_type=["simpo"], **{option: value})


def test_reference_free_refuses_an_explicit_ref_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.testing import trainer_test_args

    with pytest.raises(ValueError, match="`ref_model` is set but loss_type \\['orpo'\\] is reference-free"):
        PreferenceTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          args=PreferenceConfig(**trainer_test_args(tmp_path, loss_type=["orpo"])),
                          train_dataset=pairs(), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))


def test_policy_given_as_a_path_is_loaded_and_no_second_model_is(tiny_model_dir, tmp_path):
    import gc

    from transformers import AutoTokenizer, LlamaForCausalLM

    from alignment.testing import trainer_test_args

    gc.collect()
    before = {id(o) for o in gc.get_objects() if isinstance(o, LlamaForCausalLM)}
    trainer = PreferenceTrainer(model=tiny_model_dir, args=PreferenceConfig(**trainer_test_args(
        tmp_path, loss_type=["orpo"], max_steps=1)), train_dataset=pairs(),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    gc.collect()
    created = [o for o in gc.get_objects() if isinstance(o, LlamaForCausalLM) and id(o) not in before]
    assert trainer.ref_model is None and len(created) == 1, "exactly one model (the policy) must be loaded"
    trainer.train()


def test_lora_reference_free_run_never_disables_the_adapters(tiny_model_dir, tmp_path, monkeypatch):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.testing import trainer_test_args

    forwards = []
    original = PreferenceTrainer._reference_token_logps
    monkeypatch.setattr(PreferenceTrainer, "_reference_token_logps",
                        lambda self, *a, **k: forwards.append(1) or original(self, *a, **k))
    trainer = PreferenceTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=PreferenceConfig(**trainer_test_args(tmp_path, loss_type=["cpo"], max_steps=1)),
        train_dataset=pairs(), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
    )
    trainer.train()
    assert trainer.ref_model is None and forwards == []
