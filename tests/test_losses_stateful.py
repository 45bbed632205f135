"""Stateful losses (`LossState`) and β-DPO."""

import math

import pytest
import torch

from alignment.losses import (
    LossState,
    PreferenceBatch,
    compute_preference_loss,
    get_preference_loss,
    register_preference_loss,
    validate_preference_loss,
)


def margin_batch(h):
    """A batch whose log-ratio margins are exactly ``h`` (policy chosen log-prob = h, everything else 0)."""
    h = torch.as_tensor(h, dtype=torch.float32)
    zeros = torch.zeros_like(h)
    return PreferenceBatch.from_sequence_logps(h.clone(), zeros.clone(), zeros.clone(), zeros.clone())


H1 = [1.0, -2.0, 0.5, 3.0, -0.5]
H2 = [2.0, 0.0, -1.0, 4.0, 1.5]


# ----------------------------------------------------------------------------- registry
def test_spec_marks_stateful_losses_and_state_is_not_an_hparam():
    spec = get_preference_loss("beta_dpo")
    assert spec.stateful and "state" not in spec.hparams
    assert set(spec.hparams) >= {"beta", "alpha", "rho", "momentum"}
    assert not get_preference_loss("sigmoid").stateful


def test_state_is_refused_for_stateless_losses():
    with pytest.raises(ValueError, match="stateless"):
        compute_preference_loss("sigmoid", margin_batch(H1), state=LossState())


def test_validate_stateful_loss_uses_a_fresh_state():
    validate_preference_loss("beta_dpo", beta=0.1, alpha=0.6)
    with pytest.raises(ValueError, match="rho"):
        validate_preference_loss("beta_dpo", rho=1.0)
    with pytest.raises(ValueError, match="ema_init"):
        validate_preference_loss("beta_dpo", ema_init="ones")


def test_state_with_a_default_is_rejected_at_registration():
    with pytest.raises(ValueError, match="keyword-only without a default"):
        @register_preference_loss("_bad_state")
        def _bad(batch, *, state=None, beta: float = 0.1):
            return batch.logratio_margin, {}


def test_fresh_state_when_none_passed():
    # Without a state every call is a "first step" with a seeded generator: identical results, even when filtering.
    h = torch.randn(16, generator=torch.Generator().manual_seed(0))
    for rho in (0.0, 0.5):
        a, _ = compute_preference_loss("beta_dpo", margin_batch(h), rho=rho, ema_init="first_batch")
        b, _ = compute_preference_loss("beta_dpo", margin_batch(h), rho=rho, ema_init="first_batch")
        assert torch.equal(a, b)


def test_state_dict_round_trip_includes_generator():
    state = LossState(generator=torch.Generator().manual_seed(3))
    compute_preference_loss("beta_dpo", margin_batch(H1), state=state)
    saved = state.state_dict()
    expected_next = torch.rand(4, generator=state.generator)
    restored = LossState(generator=torch.Generator().manual_seed(99))
    restored.load_state_dict(saved)
    assert restored.buffers.keys() == state.buffers.keys()
    for key in state.buffers:
        torch.testing.assert_close(restored.buffers[key], state.buffers[key])
    torch.testing.assert_close(torch.rand(4, generator=restored.generator), expected_next)


# ----------------------------------------------------------------------------- β-DPO
def test_alpha_zero_rho_zero_equals_dpo_exactly():
    batch = margin_batch(H1)
    state = LossState()
    for _ in range(3):  # also after the EMAs moved
        ours, metrics = compute_preference_loss("beta_dpo", batch, state=state, beta=0.3, alpha=0.0, rho=0.0)
        dpo, _ = compute_preference_loss("sigmoid", batch, beta=0.3)
        assert torch.equal(ours, dpo)
        assert metrics["beta_dpo/kept_fraction"].item() == 1.0


def test_ema_hand_computed_over_two_calls():
    state = LossState()
    _, m1 = compute_preference_loss("beta_dpo", margin_batch(H1), state=state, momentum=0.9)
    mean1, std1 = sum(H1) / 5, torch.tensor(H1).std().item()
    # Official initialisation: both EMAs start at 0, and the current batch is included before use.
    assert state.buffers["margin_mean"].item() == pytest.approx(0.1 * mean1, abs=1e-6)
    assert state.buffers["margin_std"].item() == pytest.approx(0.1 * std1, abs=1e-6)
    assert m1["beta_dpo/margin_mean_ema"].item() == pytest.approx(0.1 * mean1, abs=1e-6)
    compute_preference_loss("beta_dpo", margin_batch(H2), state=state, momentum=0.9)
    mean2, std2 = sum(H2) / 5, torch.tensor(H2).std().item()
    assert state.buffers["margin_mean"].item() == pytest.approx(0.9 * 0.1 * mean1 + 0.1 * mean2, abs=1e-6)
    assert state.buffers["margin_std"].item() == pytest.approx(0.9 * 0.1 * std1 + 0.1 * std2, abs=1e-6)
    assert state.buffers["num_updates"].item() == 2


def test_first_batch_initialisation():
    state = LossState()
    compute_preference_loss("beta_dpo", margin_batch(H1), state=state, ema_init="first_batch")
    assert state.buffers["margin_mean"].item() == pytest.approx(sum(H1) / 5, abs=1e-6)
    assert state.buffers["margin_std"].item() == pytest.approx(torch.tensor(H1).std().item(), abs=1e-6)
    compute_preference_loss("beta_dpo", margin_batch(H2), state=state, ema_init="first_batch")
    assert state.buffers["margin_mean"].item() == pytest.approx(0.9 * sum(H1) / 5 + 0.1 * sum(H2) / 5, abs=1e-6)


def test_dynamic_beta_hand_computed_with_all_kept():
    state = LossState()
    loss, metrics = compute_preference_loss("beta_dpo", margin_batch(H1), state=state, beta=0.1, alpha=0.6, rho=0.0)
    m0 = 0.1 * sum(H1) / 5
    beta_b = 0.1 * (1 + 0.6 * (sum(H1) / 5 - m0))
    assert metrics["beta_dpo/beta"].item() == pytest.approx(beta_b, rel=1e-6)
    expected = torch.tensor([math.log1p(math.exp(-beta_b * h)) for h in H1])
    torch.testing.assert_close(loss, expected)


def test_beta_is_clamped_at_1e_3():
    state = LossState()
    # mean(M) = -10, M0 = -1 after the update, so α·(mean_kept − M0) = 0.6·(−9) ≤ −1.
    _, metrics = compute_preference_loss("beta_dpo", margin_batch([-10.0] * 4), state=state, rho=0.0)
    assert metrics["beta_dpo/beta"].item() == pytest.approx(1e-3)


@pytest.mark.parametrize("batch_size, rho", [(5, 0.2), (10, 0.25), (7, 0.5), (8, 0.0), (3, 0.9)])
def test_kept_fraction_and_rescaled_mean(batch_size, rho):
    h = torch.linspace(-2, 2, batch_size)
    loss, metrics = compute_preference_loss("beta_dpo", margin_batch(h), state=LossState(), rho=rho)
    kept = max(1, math.floor((1 - rho) * batch_size + 1e-9))
    assert metrics["beta_dpo/kept_fraction"].item() == pytest.approx(kept / batch_size)
    assert int((loss > 0).sum()) == kept  # every -log σ(·) > 0, dropped pairs are exactly 0
    beta_b = metrics["beta_dpo/beta"].item()
    kept_mask = loss > 0
    kept_mean = (-torch.nn.functional.logsigmoid(beta_b * h[kept_mask])).mean()
    torch.testing.assert_close(loss.mean(), kept_mean)


def test_fixed_generator_is_reproducible():
    h = torch.randn(32, generator=torch.Generator().manual_seed(0))

    def kept(seed):
        state = LossState(generator=torch.Generator().manual_seed(seed))
        return [compute_preference_loss("beta_dpo", margin_batch(h), state=state, rho=0.5)[0] > 0 for _ in range(3)]

    first, again, other = kept(7), kept(7), kept(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert any(not torch.equal(a, b) for a, b in zip(first, other))


def test_statistics_are_gathered():
    calls = []

    def fake_gather(tensor):
        calls.append(tensor.shape)
        return torch.cat([tensor, tensor + 10.0])  # a second "rank" whose margins are 10 higher

    state = LossState(gather=fake_gather)
    compute_preference_loss("beta_dpo", margin_batch(H1), state=state)
    gathered = torch.tensor(H1 + [h + 10.0 for h in H1])
    assert calls == [torch.Size([5])]
    assert state.buffers["margin_mean"].item() == pytest.approx(0.1 * gathered.mean().item(), abs=1e-6)
    assert state.buffers["margin_std"].item() == pytest.approx(0.1 * gathered.std().item(), abs=1e-6)


def test_eval_leaves_buffers_unchanged():
    state = LossState()
    compute_preference_loss("beta_dpo", margin_batch(H1), state=state)
    before = {key: value.clone() for key, value in state.buffers.items()}
    state.training = False
    _, metrics = compute_preference_loss("beta_dpo", margin_batch(H2), state=state)
    for key in before:
        assert torch.equal(state.buffers[key], before[key]), key
    assert metrics["beta_dpo/margin_mean_ema"].item() == pytest.approx(before["margin_mean"].item())


def test_gradient_flows_only_through_kept_pairs_and_beta_is_detached():
    batch = margin_batch(torch.linspace(-1, 1, 5))
    batch.chosen_logps.requires_grad_(True)
    loss, _ = compute_preference_loss("beta_dpo", batch, state=LossState(), rho=0.4)
    loss.mean().backward()
    grad = batch.chosen_logps.grad.squeeze(-1)
    kept = loss.detach() > 0
    assert (grad[kept] < 0).all() and (grad[~kept] == 0).all()


def test_single_pair_batch_is_finite():
    loss, metrics = compute_preference_loss("beta_dpo", margin_batch([0.7]), state=LossState())
    assert torch.isfinite(loss).all() and metrics["beta_dpo/kept_fraction"].item() == 1.0
