"""TRL 1.16 DPO loss types: apo_zero, apo_down, nca_pair, exo_pair, bco_pair, sppo_hard, aot, aot_unpaired,
sigmoid_norm.

The equivalence tests run TRL's own `DPOTrainer._compute_loss` (trl/trainer/dpo_trainer.py, the per-loss branches
at lines 1386-1516 of TRL 1.16) on the same token tensors, with a stand-in for the trainer and the model: the model
returns the given per-token log-probs, and the reference sums come in as precomputed `ref_*_logps` (TRL's
`precompute_ref_logps` path), so nothing heavy is instantiated and no formula is re-typed here. Loss and gradients
w.r.t. the per-token policy log-probs must agree to 1e-6. Hand-computed values use `math` only.
"""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl import DPOTrainer

from alignment.losses import (
    PreferenceBatch,
    compute_preference_loss,
    get_preference_loss,
    list_preference_losses,
    validate_preference_loss,
)
from alignment.testing import example_preference_batch as token_batch

NEW = ["apo_zero", "apo_down", "nca_pair", "exo_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired", "sigmoid_norm"]


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def logsig(x):
    return -math.log1p(math.exp(-x))


def random_batch(seed, b=6, t=7):
    """Float64 pairs of random lengths; log-probs are zero outside the completion, as a masked LM head gives."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (2, b), generator=g)
    ar = torch.arange(t)
    cm, rm = (ar < lengths[0, :, None]).double(), (ar < lengths[1, :, None]).double()

    def lp(mask):
        return -torch.rand(b, t, generator=g, dtype=torch.float64) * 3 * mask
    return PreferenceBatch(lp(cm), lp(rm), lp(cm), lp(rm), cm, rm)


def trl_loss_and_grads(loss_type, batch, *, beta, label_smoothing=0.0):
    """TRL 1.16's `DPOTrainer._compute_loss` on `batch`: (mean loss, d/d chosen_logps, d/d rejected_logps)."""
    b, t = batch.chosen_logps.shape
    per_token = torch.cat([batch.chosen_logps, batch.rejected_logps]).detach().requires_grad_(True)
    # TRL's completion_mask covers input_ids; the log-probs are for positions 1.. (shifted), so prepend a prompt token.
    completion_mask = torch.cat([torch.zeros(2 * b, 1), torch.cat([batch.chosen_mask, batch.rejected_mask])], dim=1)
    inputs = {
        "input_ids": torch.zeros(2 * b, t + 1, dtype=torch.long),
        "attention_mask": torch.ones(2 * b, t + 1, dtype=torch.long),
        "completion_mask": completion_mask.long(),
        "ref_chosen_logps": batch.ref_chosen_logps.sum(1),
        "ref_rejected_logps": batch.ref_rejected_logps.sum(1),
    }

    def model(**kwargs):
        zeros = torch.zeros(2 * b, t, dtype=torch.float64)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    identity = lambda x: x  # noqa: E731  (one process: gathers are the identity)
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), ld_alpha=None, aux_loss_enabled=False, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0], beta=beta,
        label_smoothing=label_smoothing, use_weighting=False, args=SimpleNamespace(gradient_checkpointing_kwargs=None),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=identity, gather_for_metrics=identity),
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
    )
    loss = DPOTrainer._compute_loss(trainer, model, inputs, False)
    (grad,) = torch.autograd.grad(loss, per_token)
    # TRL sums log-probs without a mask (the LM head zeroes non-completion positions, which then get no gradient).
    return loss.detach(), grad[:b] * batch.chosen_mask, grad[b:] * batch.rejected_mask


def our_loss_and_grads(loss_type, batch, **hp):
    chosen = batch.chosen_logps.detach().clone().requires_grad_(True)
    rejected = batch.rejected_logps.detach().clone().requires_grad_(True)
    ours = PreferenceBatch(chosen, rejected, batch.ref_chosen_logps, batch.ref_rejected_logps, batch.chosen_mask,
                           batch.rejected_mask)
    per_example, _ = compute_preference_loss(loss_type, ours, **hp)
    loss = per_example.mean()  # TRL: per_sequence_loss.mean() * loss_weight
    grad_chosen, grad_rejected = torch.autograd.grad(loss, (chosen, rejected))
    return loss.detach(), grad_chosen, grad_rejected


CASES = [
    ("apo_zero", {"beta": 0.1}), ("apo_zero", {"beta": 0.8}),
    ("apo_down", {"beta": 0.1}), ("apo_down", {"beta": 0.8}),
    ("nca_pair", {"beta": 0.1}), ("nca_pair", {"beta": 0.8}),
    ("exo_pair", {"beta": 0.1, "label_smoothing": 1e-3}), ("exo_pair", {"beta": 0.8, "label_smoothing": 0.2}),
    ("bco_pair", {"beta": 0.1}), ("bco_pair", {"beta": 0.8}),
    ("sppo_hard", {"beta": 0.1}), ("sppo_hard", {"beta": 0.8}),
    ("aot", {"beta": 0.1}), ("aot", {"beta": 0.8, "label_smoothing": 0.2}),
    ("aot_unpaired", {"beta": 0.1}), ("aot_unpaired", {"beta": 0.8, "label_smoothing": 0.2}),
    ("sigmoid_norm", {"beta": 0.1}), ("sigmoid_norm", {"beta": 5.0}),
]


@pytest.mark.parametrize("name,hp", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_and_gradients_equal_trl_dpo_trainer(name, hp, seed):
    batch = random_batch(seed)
    trl_loss, trl_grad_c, trl_grad_r = trl_loss_and_grads(name, batch, **hp)
    loss, grad_c, grad_r = our_loss_and_grads(name, batch, **hp)
    torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_c, trl_grad_c, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_r, trl_grad_r, atol=1e-6, rtol=0)
    # the comparison has teeth: both sides' gradients are non-trivial
    assert grad_c.abs().sum() > 1e-3 and grad_r.abs().sum() > 1e-3


def test_every_new_loss_covered_by_the_trl_comparison():
    assert {name for name, _ in CASES} == set(NEW)
    assert set(NEW) <= set(list_preference_losses())


# ---------------------------------------------------------------- hand-computed values

R_W, R_L, BETA = 2.0, -1.0, 0.5  # chosen and rejected log-ratios of one pair


def one_pair():
    """One pair with log-ratios r_w = 2, r_l = −1 (policy − reference sums)."""
    t = torch.tensor
    return PreferenceBatch.from_sequence_logps(t([-1.0]), t([-4.0]), t([-3.0]), t([-3.0]))


@pytest.mark.parametrize(
    "name,hp,expected",
    [
        ("apo_zero", {}, (1 - sig(BETA * R_W)) + sig(BETA * R_L)),
        ("apo_down", {}, sig(BETA * R_W) + (1 - sig(BETA * (R_W - R_L)))),
        ("nca_pair", {}, -logsig(BETA * R_W) - 0.5 * logsig(-BETA * R_W) - 0.5 * logsig(-BETA * R_L)),
        ("exo_pair", {"label_smoothing": 0.1},
         sig(1.5) * (logsig(1.5) - math.log(0.9)) + sig(-1.5) * (logsig(-1.5) - math.log(0.1))),
        ("bco_pair", {}, -logsig(BETA * R_W) - logsig(-BETA * R_L)),
        ("sppo_hard", {}, (R_W - 1.0) ** 2 + (R_L + 1.0) ** 2),  # targets ±1/(2β) = ±1
    ],
)
def test_hand_computed(name, hp, expected):
    loss, _ = compute_preference_loss(name, one_pair(), beta=BETA, **hp)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_sppo_hard_is_zero_at_its_targets():
    t = torch.tensor
    batch = PreferenceBatch.from_sequence_logps(t([1.0]), t([-1.0]), t([0.0]), t([0.0]))  # r_w = 1, r_l = −1
    loss, _ = compute_preference_loss("sppo_hard", batch, beta=0.5)
    assert loss.item() == 0.0


def test_sigmoid_norm_hand_computed_divides_each_side_by_its_length():
    # chosen: 2 tokens, log-ratio 2 → 1 per token; rejected: 4 tokens, log-ratio −1 → −0.25 per token.
    chosen = torch.tensor([[-0.5, -0.5, 0.0, 0.0]])
    ref_chosen = torch.tensor([[-1.5, -1.5, 0.0, 0.0]])
    rejected = torch.tensor([[-1.0, -1.0, -1.0, -1.0]])
    ref_rejected = torch.tensor([[-0.75, -0.75, -0.75, -0.75]])
    batch = PreferenceBatch(chosen, rejected, ref_chosen, ref_rejected, torch.tensor([[1.0, 1.0, 0.0, 0.0]]),
                            torch.ones(1, 4))
    loss, metrics = compute_preference_loss("sigmoid_norm", batch, beta=BETA)
    assert loss.item() == pytest.approx(-logsig(BETA * 1.25), abs=1e-6)
    assert metrics["sigmoid_norm/normalized_margin"].item() == pytest.approx(1.25)
    dpo, _ = compute_preference_loss("sigmoid", batch, beta=BETA)
    assert dpo.item() == pytest.approx(-logsig(BETA * 3.0), abs=1e-6)  # unnormalised margin 3


def test_exo_pair_is_zero_at_its_target_margin():
    eps = 0.1
    h = math.log((1 - eps) / eps) / BETA  # σ(βh) = 1 − ε
    t = torch.tensor
    batch = PreferenceBatch.from_sequence_logps(t([h]), t([0.0]), t([0.0]), t([0.0]))
    loss, _ = compute_preference_loss("exo_pair", batch, beta=BETA, label_smoothing=eps)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_aot_hand_computed_sorts_policy_and_reference_margins_separately():
    t = torch.tensor
    # policy margins ℓ_θ(y_w) − ℓ_θ(y_l) = [3, −1, 0.5]; reference margins [0, 2, −2]
    batch = PreferenceBatch.from_sequence_logps(t([3.0, -1.0, 0.5]), t([0.0, 0.0, 0.0]), t([0.0, 2.0, -2.0]),
                                                t([0.0, 0.0, 0.0]))
    loss, _ = compute_preference_loss("aot", batch, beta=1.0)
    # sorted [−1, 0.5, 3] − sorted [−2, 0, 2] = [1, 0.5, 1]
    expected = [-logsig(1.0), -logsig(0.5), -logsig(1.0)]
    torch.testing.assert_close(loss, t(expected), atol=1e-6, rtol=0)
    smoothed, _ = compute_preference_loss("aot", batch, beta=1.0, label_smoothing=0.25)
    expected = [-0.75 * logsig(d) - 0.25 * logsig(-d) for d in (1.0, 0.5, 1.0)]
    torch.testing.assert_close(smoothed, t(expected), atol=1e-6, rtol=0)


def test_aot_unpaired_hand_computed_sorts_chosen_and_rejected_log_ratios_separately():
    t = torch.tensor
    # chosen log-ratios [1, −2, 0]; rejected log-ratios [0.5, −3, 4]
    batch = PreferenceBatch.from_sequence_logps(t([0.0, -3.0, -1.0]), t([-0.5, -4.0, 3.0]), t([-1.0, -1.0, -1.0]),
                                                t([-1.0, -1.0, -1.0]))
    loss, _ = compute_preference_loss("aot_unpaired", batch, beta=1.0)
    # sorted [−2, 0, 1] − sorted [−3, 0.5, 4] = [1, −0.5, −3]
    torch.testing.assert_close(loss, t([-logsig(1.0), -logsig(-0.5), -logsig(-3.0)]), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_nonpositive_beta_rejected(name, beta):
    with pytest.raises(ValueError, match=r"`beta` must be a number > 0"):
        validate_preference_loss(name, beta=beta)


@pytest.mark.parametrize("eps", [0.0, 1.0, -0.1])
def test_exo_pair_label_smoothing_must_be_strictly_inside_0_1(eps):
    with pytest.raises(ValueError, match=r"`label_smoothing` \(EXO's ε\) must be in \(0, 1\)"):
        validate_preference_loss("exo_pair", label_smoothing=eps)


@pytest.mark.parametrize("name", ["aot", "aot_unpaired"])
def test_aot_refuses_per_example_weights(name):
    with pytest.raises(ValueError, match=r"per-example `weight` column cannot apply"):
        compute_preference_loss(name, token_batch(weight=torch.tensor([2.0, 0.5])))
    with pytest.raises(ValueError, match=r"`label_smoothing` must be in \[0.0, 0.5\)"):
        validate_preference_loss(name, label_smoothing=0.5)


@pytest.mark.parametrize(
    "name,defaults",
    [(name, {"beta": 0.1}) for name in ("apo_zero", "apo_down", "nca_pair", "sppo_hard", "sigmoid_norm")]
    + [("exo_pair", {"beta": 0.1, "label_smoothing": 1e-3}), ("aot", {"beta": 0.1, "label_smoothing": 0.0}),
       ("aot_unpaired", {"beta": 0.1, "label_smoothing": 0.0}), ("bco_pair", {"beta": 0.1, "reward_shift": False})],
)
def test_registered_hparams_and_defaults(name, defaults):
    spec = get_preference_loss(name)
    assert spec.hparams == defaults and spec.stateful == (name == "bco_pair")
    assert spec.summary
    validate_preference_loss(name)


@pytest.mark.parametrize("name", [n for n in NEW if not n.startswith("aot")])
def test_unit_weight_is_identity_and_weights_scale(name):
    plain, _ = compute_preference_loss(name, token_batch())
    weighted, _ = compute_preference_loss(name, token_batch(weight=torch.tensor([2.0, 0.5])))
    torch.testing.assert_close(weighted, plain * torch.tensor([2.0, 0.5]))


# ---------------------------------------------------------------- through the trainer's configuration

def test_recipe_label_smoothing_reaches_exo_and_aot():
    from alignment.configs import PreferenceConfig
    from alignment.trainers.preference_config import resolve_loss_hparams

    args = PreferenceConfig(output_dir="unused", loss_type=["exo_pair", "aot"], loss_weights=[1.0, 1.0], beta=0.3,
                            label_smoothing=0.2, report_to="none", use_cpu=True, bf16=False)
    assert resolve_loss_hparams(args) == {
        "exo_pair": {"beta": 0.3, "label_smoothing": 0.2}, "aot": {"beta": 0.3, "label_smoothing": 0.2}}


def test_trainer_refuses_exo_pair_without_label_smoothing_before_training(tiny_model_dir, tmp_path):
    # TRL's DPOTrainer.__init__ check (EXO's log ε is infinite at ε = 0); the message names the field and a value.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.configs import PreferenceConfig
    from alignment.testing import preference_pairs
    from alignment.trainers import PreferenceTrainer

    args = PreferenceConfig(output_dir=str(tmp_path), loss_type="exo_pair", report_to="none", use_cpu=True,
                            bf16=False, max_length=64)
    with pytest.raises(ValueError, match=r"Label smoothing must be greater than 0.0 when using 'exo_pair'.*1e-3"):
        PreferenceTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                          train_dataset=preference_pairs(4),
                          processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))


# ---------------------------------------------------------------- bco_pair's reward shift δ (TRL < 1.0)

class _TRL028RunningMean:
    """The mean part of TRL v0.28.0's `RunningMoments.update` (trl/trainer/utils.py lines 183-217), one process."""

    def __init__(self):
        self.mean, self.count = 0, 1e-24

    def update(self, xs):
        xs_count = xs.numel()
        xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
        xs_mean, xs_var = xs_mean.float(), xs_var.float()
        delta = xs_mean - self.mean
        tot_count = self.count + xs_count
        self.mean += (delta * xs_count / tot_count).item()
        self.count = tot_count


def _trl028_bco_pair(running, batch, beta):
    """TRL v0.28.0 `DPOTrainer.dpo_loss`, loss_type "bco_pair" (trl/trainer/dpo_trainer.py lines 1181-1191)."""
    import torch.nn.functional as F

    chosen_logratios = batch.chosen_logratios
    rejected_logratios = batch.rejected_logratios
    chosen_rewards = beta * chosen_logratios
    rejected_rewards = beta * rejected_logratios
    rewards = torch.cat((chosen_rewards, rejected_rewards), 0).mean().detach()
    running.update(rewards)
    delta = running.mean
    return -F.logsigmoid((beta * chosen_logratios) - delta) - F.logsigmoid(-(beta * rejected_logratios - delta))


def _with_grad(batch):
    chosen = batch.chosen_logps.detach().clone().requires_grad_(True)
    rejected = batch.rejected_logps.detach().clone().requires_grad_(True)
    return PreferenceBatch(chosen, rejected, batch.ref_chosen_logps, batch.ref_rejected_logps, batch.chosen_mask,
                           batch.rejected_mask)


def test_bco_pair_reward_shift_equals_trl_028_running_mean_over_steps():
    from alignment.losses import LossState

    state, running, beta = LossState(), _TRL028RunningMean(), 0.5
    for step in range(4):
        ours, theirs = _with_grad(random_batch(10 + step)), _with_grad(random_batch(10 + step))
        loss, metrics = compute_preference_loss("bco_pair", ours, state=state, beta=beta, reward_shift=True)
        reference = _trl028_bco_pair(running, theirs, beta)
        torch.testing.assert_close(loss, reference, atol=1e-6, rtol=0)
        loss.mean().backward()
        reference.mean().backward()
        torch.testing.assert_close(ours.chosen_logps.grad, theirs.chosen_logps.grad, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.rejected_logps.grad, theirs.rejected_logps.grad, atol=1e-6, rtol=0)
        assert metrics["bco_pair/reward_shift"].item() == pytest.approx(running.mean, abs=1e-6)
    assert running.mean != 0.0  # δ moved, so the comparison exercises the shift


def test_bco_pair_reward_shift_hand_computed_two_steps_eval_and_resume():
    from alignment.losses import LossState

    t = torch.tensor
    beta = 0.5
    # step 1: r_w = 2, r_l = -1 -> rewards {1, -0.5}, mean 0.25 = δ
    step1 = PreferenceBatch.from_sequence_logps(t([-1.0]), t([-4.0]), t([-3.0]), t([-3.0]))
    # step 2: r_w = 4, r_l = 1 -> rewards {2, 0.5}, mean 1.25; δ = (0.25 + 1.25) / 2 = 0.75
    step2 = PreferenceBatch.from_sequence_logps(t([1.0]), t([-2.0]), t([-3.0]), t([-3.0]))
    state = LossState()
    loss1, _ = compute_preference_loss("bco_pair", step1, state=state, beta=beta, reward_shift=True)
    assert loss1.item() == pytest.approx(-logsig(1.0 - 0.25) - logsig(-(-0.5 - 0.25)), abs=1e-6)
    saved = state.state_dict()
    loss2, metrics = compute_preference_loss("bco_pair", step2, state=state, beta=beta, reward_shift=True)
    assert metrics["bco_pair/reward_shift"].item() == pytest.approx(0.75)
    assert loss2.item() == pytest.approx(-logsig(2.0 - 0.75) - logsig(-(0.5 - 0.75)), abs=1e-6)
    # eval batches read δ without moving it
    state.training = False
    compute_preference_loss("bco_pair", step1, state=state, beta=beta, reward_shift=True)
    assert state.buffers["reward_shift"].item() == pytest.approx(0.75)
    # a resumed state continues from the checkpointed δ
    resumed = LossState()
    resumed.load_state_dict(saved)
    _, metrics = compute_preference_loss("bco_pair", step2, state=resumed, beta=beta, reward_shift=True)
    assert metrics["bco_pair/reward_shift"].item() == pytest.approx(0.75)


def test_bco_pair_reward_shift_counts_each_rank_mean_once():
    from alignment.losses import LossState

    t = torch.tensor
    other_rank_mean = 3.0
    state = LossState(gather=lambda x: torch.cat([x, x.new_full(x.shape, other_rank_mean)]))
    batch = PreferenceBatch.from_sequence_logps(t([-1.0]), t([-4.0]), t([-3.0]), t([-3.0]))  # local mean 0.25
    _, metrics = compute_preference_loss("bco_pair", batch, state=state, beta=0.5, reward_shift=True)
    assert metrics["bco_pair/reward_shift"].item() == pytest.approx((0.25 + other_rank_mean) / 2)
    assert state.buffers["num_updates"].item() == 2


def test_bco_pair_without_reward_shift_keeps_no_state():
    from alignment.losses import LossState

    state = LossState()
    compute_preference_loss("bco_pair", random_batch(0), state=state)
    assert state.buffers == {}


def test_bco_pair_reward_shift_trains_through_the_trainer(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.configs import PreferenceConfig
    from alignment.testing import preference_pairs
    from alignment.trainers import PreferenceTrainer

    args = PreferenceConfig(output_dir=str(tmp_path), loss_type="bco_pair", loss_kwargs={"reward_shift": True},
                            per_device_train_batch_size=2, max_steps=2, learning_rate=1e-2, logging_steps=1,
                            report_to="none", use_cpu=True, bf16=False, save_strategy="no", max_length=64)
    trainer = PreferenceTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                                train_dataset=preference_pairs(4),
                                processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    trainer.train()
    assert trainer._loss_states["bco_pair"].buffers["num_updates"].item() == 2
    logged = [entry["bco_pair/reward_shift"] for entry in trainer.state.log_history if "bco_pair/reward_shift" in entry]
    assert len(logged) == 2 and all(math.isfinite(value) for value in logged)
