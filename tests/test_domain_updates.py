"""Domain-weight update rules: hand-computed updates, limits, distributions, state, and bad configuration."""

import io
import math

import pytest
import torch

from alignment.domain_rules import (
    DOMAIN_UPDATES,
    DomainWeightState,
    clipped_excess_loss,
    get_domain_update,
    list_domain_updates,
    register_domain_update,
    update_domain_state,
    update_domain_weights,
    validate_domain_update,
)
from alignment.trainers.domain_reweighting import OnlineDomainWeights


def _normalize(values):
    total = sum(values)
    return [v / total for v in values]


def _close(tensor, expected, tol=1e-6):
    assert tensor.tolist() == pytest.approx(expected, abs=tol), (tensor.tolist(), expected)


W = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


def test_registry_lists_the_rules():
    assert {"doremi", "doge", "velocitune", "cooldown"} <= set(list_domain_updates())
    assert get_domain_update("doremi").hparams == {"eta": 1.0, "eps": 1e-3}


# ------------------------------------------------------------------------------------------------------ DoReMi


def _doremi_by_hand(weights, scores, eta, eps):
    unnormalized = [w * math.exp(eta * s) for w, s in zip(weights, scores)]
    return [(1 - eps) * p + eps / len(weights) for p in _normalize(unnormalized)]


def test_doremi_hand_computed_with_step_size_and_smoothing():
    losses, ref = torch.tensor([2.0, 1.0, 3.0]), torch.tensor([1.5, 1.2, 2.0])
    # excess = [0.5, -0.2, 1.0] -> clipped [0.5, 0, 1.0]
    new = update_domain_weights("doremi", W, step=0, losses=losses, ref_losses=ref)
    _close(new, _doremi_by_hand([0.5, 0.3, 0.2], [0.5, 0.0, 1.0], eta=1.0, eps=1e-3))
    new = update_domain_weights("doremi", W, step=0, losses=losses, ref_losses=ref, eta=2.0, eps=0.1)
    _close(new, _doremi_by_hand([0.5, 0.3, 0.2], [0.5, 0.0, 1.0], eta=2.0, eps=0.1))


def test_doremi_clips_negative_excess_at_zero():
    clipped = update_domain_weights("doremi", W, step=0, excess_loss=torch.tensor([0.5, -3.0, 1.0]))
    zero = update_domain_weights("doremi", W, step=0, excess_loss=torch.tensor([0.5, 0.0, 1.0]))
    unclipped = _doremi_by_hand([0.5, 0.3, 0.2], [0.5, -3.0, 1.0], eta=1.0, eps=1e-3)
    _close(clipped, zero.tolist(), tol=1e-12)
    assert abs(clipped[1].item() - unclipped[1]) > 0.1


def test_doremi_limits_and_direction():
    excess = torch.tensor([0.0, 0.0, 2.0])
    # eps = 1: pure uniform; no excess anywhere: only the smoothing moves the weights.
    _close(update_domain_weights("doremi", W, step=0, excess_loss=excess, eps=1.0), [1 / 3] * 3)
    _close(update_domain_weights("doremi", W, step=0, excess_loss=torch.zeros(3), eps=0.0), W.tolist())
    # the domain with the largest excess gains weight, the others lose it
    new = update_domain_weights("doremi", W, step=0, excess_loss=excess, eps=0.0)
    assert new[2] > W[2] and new[0] < W[0] and new[1] < W[1]


def test_doremi_absent_domain_reuses_previous_score():
    excess = torch.tensor([0.5, float("nan"), 1.0])
    with_previous = update_domain_weights("doremi", W, step=3, excess_loss=excess,
                                          previous_excess_loss=torch.tensor([9.0, 0.7, 9.0]))
    _close(with_previous, _doremi_by_hand([0.5, 0.3, 0.2], [0.5, 0.7, 1.0], 1.0, 1e-3))
    without = update_domain_weights("doremi", W, step=3, excess_loss=excess)
    _close(without, _doremi_by_hand([0.5, 0.3, 0.2], [0.5, 0.0, 1.0], 1.0, 1e-3))


def test_per_domain_excess_loss_clips_per_token_then_averages():
    # example 0 (domain 0): excess per token [1, -1] -> clipped mean 0.5 (the clipped *mean* would be 0)
    # example 1 (domain 1): excess [2, 4], second token masked out -> 2
    # example 2 (domain 0): excess [3, 0] -> together with example 0: (1 + 0 + 3 + 0) / 4 = 1
    # domain 2: absent -> NaN
    policy = torch.tensor([[2.0, 1.0], [3.0, 9.0], [4.0, 1.0]])
    ref = torch.tensor([[1.0, 2.0], [1.0, 5.0], [1.0, 1.0]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    # What the SFT trainer records with a DoReMi reference model: per-token clipped excess, summed per example, then
    # summed per domain over the step and divided by the domain's token count (`OnlineDomainWeights`).
    excess = clipped_excess_loss(policy, ref, mask)
    assert excess.tolist() == [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]
    online = OnlineDomainWeights(["a", "b", "c"], torch.full((3,), 1 / 3), torch.full((3,), 1 / 3))
    online.record(torch.tensor([0, 1, 0]), excess.sum(-1), mask.sum(-1))
    metrics = online.step_end()
    assert [metrics[f"domain_loss/{d}"] for d in "ab"] == pytest.approx([1.0, 2.0])
    # domain 2 absent: no count, and its score stays the previous one (0 before any), as in DoReMi's code
    assert metrics["domain_count/c"] == 0.0 and metrics["domain_loss/c"] == 0.0
    # per-domain sums and counts: example values summed per domain, ids outside 0..K-1 (eval-only domains) ignored
    online.record(torch.tensor([2, 2, 0]), torch.tensor([1.0, 2.0, 3.0]))
    online.record(torch.tensor([3]), torch.tensor([5.0]))
    metrics = online.step_end()
    assert [metrics[f"domain_count/{d}"] for d in "abc"] == [1.0, 0.0, 2.0]
    assert [metrics[f"domain_loss/{d}"] for d in "abc"] == pytest.approx([3.0, 2.0, 1.5])  # b: its previous loss


# -------------------------------------------------------------------------------------------------------- DoGE

# g0 = [1, 0], g1 = [1, 1], g2 = [0, -1]: gram [[1, 1, 0], [1, 2, -1], [0, -1, 1]]
GRADS = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
MEAN_NORM = (1 + math.sqrt(2) + 1) / 3


def _doge_by_hand(weights, alignment, lr, mu, dw_min=0.0, dw_max=5.0, eps=0.0, normalize=True):
    scores = [lr * a / (MEAN_NORM + 1e-6) if normalize else lr * a for a in alignment]
    scores = [min(max(s, lr * dw_min), lr * dw_max) for s in scores]
    return [(1 - eps) * p + eps / len(weights)
            for p in _normalize([w * math.exp(s / mu) for w, s in zip(weights, scores)])]


@pytest.mark.parametrize("include_self, alignment", [(True, [2.0, 2.0, 0.0]), (False, [1.0, 0.0, -1.0])])
def test_doge_universal_hand_computed(include_self, alignment):
    new = update_domain_weights("doge", W, step=0, grads=GRADS, learning_rate=0.1, mu=0.1, include_self=include_self)
    _close(new, _doge_by_hand([0.5, 0.3, 0.2], alignment, lr=0.1, mu=0.1))
    # the inner-product matrix gives the same update as the gradients
    from_gram = update_domain_weights("doge", W, step=0, gram=GRADS @ GRADS.T, learning_rate=0.1, mu=0.1,
                                      include_self=include_self)
    _close(from_gram, new.tolist(), tol=1e-12)


def test_doge_clip_normalisation_and_smoothing():
    # dw_min = -1 lets the negative alignment through; dw_max = 0.5 caps the positive one at lr * 0.5
    new = update_domain_weights("doge", W, step=0, grads=GRADS, learning_rate=0.1, mu=0.05, include_self=False,
                                dw_min=-1.0, dw_max=0.5, eps=0.2, normalize=False)
    _close(new, _doge_by_hand([0.5, 0.3, 0.2], [1.0, 0.0, -1.0], 0.1, 0.05, -1.0, 0.5, 0.2, normalize=False))


def test_doge_targets():
    # out-of-domain target gradient t = [1, 0]: alignment <g_i, t> = [1, 1, 0]
    target = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    ood = update_domain_weights("doge", W, step=0, grads=GRADS, target_grads=target, learning_rate=0.1, mu=0.1)
    _close(ood, _doge_by_hand([0.5, 0.3, 0.2], [1.0, 1.0, 0.0], 0.1, 0.1))
    same = update_domain_weights("doge", W, step=0, gram=GRADS @ GRADS.T, target_gram=GRADS @ target.T,
                                 learning_rate=0.1, mu=0.1)
    _close(same, ood.tolist(), tol=1e-12)
    # in-set target subset {1}, self term dropped for domain 1 only: [1, 2 - 2, -1]
    subset = update_domain_weights("doge", W, step=0, grads=GRADS, target_domains=[1], include_self=False,
                                   learning_rate=0.1, mu=0.1, dw_min=-10.0)
    _close(subset, _doge_by_hand([0.5, 0.3, 0.2], [1.0, 0.0, -1.0], 0.1, 0.1, dw_min=-10.0))


def test_doge_direction_aligned_domain_gains():
    new = update_domain_weights("doge", W, step=0, grads=GRADS, learning_rate=0.1, mu=0.01, include_self=False)
    # only g0 has a positive alignment with the others: its weight grows, g2 (anti-aligned, clipped to 0) shrinks
    assert new[0] > W[0] and new[2] < W[2]


# -------------------------------------------------------------------------------------------------- Velocitune


def test_velocitune_hand_computed_and_clipped():
    weights = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    # V = clip((l - target) / (init - target), 0, 1): [(2-1)/(3-1), below target -> 0, above init -> 1]
    new = update_domain_weights("velocitune", weights, step=0, losses=[2.0, 0.5, 4.0], initial_losses=[3.0, 3.0, 3.0],
                                target_losses=[1.0, 1.0, 1.0])
    _close(new, _normalize([0.25 * math.exp(0.5), 0.25 * math.exp(0.0), 0.5 * math.exp(1.0)]))
    # the slowest domain (largest remaining gap) gains relative to the fastest
    assert new[2] / new[1] > weights[2] / weights[1]


# ---------------------------------------------------------------------------------------- distribution invariant


def test_weights_stay_a_distribution_over_many_steps():
    generator = torch.Generator().manual_seed(0)
    k = 5
    cases = {
        "doremi": lambda: {"excess_loss": torch.randn(k, generator=generator) * 3, "eta": 5.0, "eps": 1e-3},
        "doge": lambda: {"grads": torch.randn(k, 7, generator=generator), "learning_rate": 1.0, "mu": 0.01},
        "velocitune": lambda: {"losses": torch.rand(k, generator=generator) * 4,
                               "initial_losses": torch.full((k,), 3.0), "target_losses": torch.ones(k)},
    }
    for name, make_inputs in cases.items():
        state = DomainWeightState.uniform(k)
        for _ in range(200):
            state.record(update_domain_weights(name, state.weights, step=state.step, **make_inputs()))
            weights = state.weights
            assert (weights >= 0).all() and abs(weights.sum().item() - 1) < 1e-5, name
        if name == "doremi":
            assert weights.min() >= 1e-3 / k * (1 - 1e-6)  # the smoothing floor eps / K


# ------------------------------------------------------------------------------------------------------- state


def test_state_average_is_mean_of_updated_weights_and_round_trips():
    state = DomainWeightState.uniform(["code", "math"])
    assert state.average.tolist() == [0.5, 0.5] and state.step == 0
    for w in ([0.2, 0.8], [0.6, 0.4], [0.1, 0.9]):
        state.record(torch.tensor(w))
    _close(state.average, [0.3, 0.7])
    assert state.step == 3 and state.weights.tolist() == pytest.approx([0.1, 0.9])
    assert state.as_dict() == pytest.approx({"code": 0.1, "math": 0.9})
    state.buffers["excess_loss"] = torch.tensor([0.3, 0.1])

    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    buffer.seek(0)
    restored = DomainWeightState.uniform(["code", "math"])
    restored.load_state_dict(torch.load(buffer))
    assert restored.step == 3 and restored.buffers["excess_loss"].tolist() == pytest.approx([0.3, 0.1])
    _close(restored.average, [0.3, 0.7])
    restored.record(torch.tensor([0.5, 0.5]))
    _close(restored.average, [(0.2 + 0.6 + 0.1 + 0.5) / 4, (0.8 + 0.4 + 0.9 + 0.5) / 4])

    with pytest.raises(ValueError, match="domains"):
        DomainWeightState.uniform(["code", "chat"]).load_state_dict(state.state_dict())


def test_state_average_including_initial_weights_like_the_doremi_code():
    state = DomainWeightState.uniform(2, average_includes_initial=True)
    state.record(torch.tensor([0.1, 0.9]))
    _close(state.average, [(0.5 + 0.1) / 2, (0.5 + 0.9) / 2])


def test_state_update_passes_the_step():
    seen = []

    @register_domain_update("_test_step_recorder", inputs=())
    def _recorder(weights, *, step):
        seen.append(step)
        return weights

    state = DomainWeightState.uniform(3)
    for _ in range(3):
        state.record(update_domain_weights("_test_step_recorder", state.weights, step=state.step))
    assert seen == [0, 1, 2]


def test_a_rule_with_buffers_reads_and_replaces_them_in_the_state_which_checkpoints_them():
    seen = []

    @register_domain_update("_test_counter", inputs=(), buffers=("count",))
    def _counter(weights, *, step, buffers):
        seen.append({key: float(value) for key, value in buffers.items()})
        buffers["count"] = buffers.get("count", torch.zeros(())) + 1  # in place on the rule's copy only
        return weights, buffers

    try:
        spec = get_domain_update("_test_counter")
        assert spec.buffers == ("count",) and spec.signals == () and spec.required == () and spec.hparams == {}
        state = DomainWeightState.uniform(2)
        state.buffers["other"] = torch.tensor([7.0])  # not the rule's: neither passed to it nor dropped
        before = state.buffers
        for _ in range(2):
            update_domain_state("_test_counter", state)
        assert seen == [{}, {"count": 1.0}] and float(state.buffers["count"]) == 2.0 and state.step == 2
        assert state.buffers["other"].tolist() == [7.0] and before is state.buffers

        saved = io.BytesIO()
        torch.save(state.state_dict(), saved)
        saved.seek(0)
        restored = DomainWeightState.uniform(2)
        restored.load_state_dict(torch.load(saved))
        update_domain_state("_test_counter", restored)
        assert seen[-1] == {"count": 2.0} and float(restored.buffers["count"]) == 3.0
        assert float(state.buffers["count"]) == 2.0  # the rule worked on a copy

        # One update from given buffers (new ones dropped); none given = a fresh state.
        update_domain_weights("_test_counter", W, step=0, buffers={"count": torch.tensor(5.0)})
        update_domain_weights("_test_counter", W, step=0)
        assert seen[-2:] == [{"count": 5.0}, {}]
        with pytest.raises(ValueError, match=r"buffers of .* does not take \['cnt'\].*\['count'\]"):
            update_domain_weights("_test_counter", W, step=0, buffers={"cnt": torch.tensor(1.0)})
        with pytest.raises(ValueError, match="takes the buffers from the state"):
            update_domain_state("_test_counter", state, buffers={})
        with pytest.raises(ValueError, match=r"does not take \['buffers'\]"):
            validate_domain_update("_test_counter", buffers={})  # not a recipe hyper-parameter
    finally:
        DOMAIN_UPDATES.unregister("_test_counter")

    @register_domain_update("_test_leaky", inputs=(), buffers=("a",))
    def _leaky(weights, *, step, buffers):
        return weights, {"b": torch.zeros(())}

    try:
        with pytest.raises(RuntimeError, match=r"buffers \['b'\] it does not declare"):
            update_domain_state("_test_leaky", DomainWeightState.uniform(2))
    finally:
        DOMAIN_UPDATES.unregister("_test_leaky")
    with pytest.raises(ValueError, match="not keyword-only parameters"):
        register_domain_update("_test_no_param", inputs=(), buffers=("a",))(lambda weights, *, step: weights)


# ------------------------------------------------------------------------------------------------------ errors


def test_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="Valid names: .*doge.*doremi"):
        update_domain_weights("dorem", W, step=0)
    with pytest.raises(ValueError, match="does not take \\['etaa'\\].*eta=1.0"):
        update_domain_weights("doremi", W, step=0, excess_loss=torch.zeros(3), etaa=1.0)
    with pytest.raises(ValueError, match="needs the input"):
        update_domain_weights("velocitune", W, step=0, losses=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="does not take"):
        validate_domain_update("doremi", excess_loss=1.0)  # an input is not a recipe hyper-parameter


@pytest.mark.parametrize("weights, message", [
    (torch.tensor([0.5, 0.6]), "sum to 1"),
    (torch.tensor([1.5, -0.5]), "non-negative"),
    (torch.tensor([[0.5, 0.5]]), "1-D"),
])
def test_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        update_domain_weights("doremi", weights, step=0, excess_loss=torch.zeros(weights.shape[-1]))


def test_bad_hyper_parameters_and_inputs():
    with pytest.raises(ValueError, match="`eta`"):
        validate_domain_update("doremi", eta=0.0)
    with pytest.raises(ValueError, match="`eps`.*1e-3"):
        validate_domain_update("doremi", eps=2.0)
    with pytest.raises(ValueError, match="`mu`"):
        validate_domain_update("doge", mu=0)
    with pytest.raises(ValueError, match="switch_step"):
        validate_domain_update("cooldown")
    validate_domain_update("cooldown", switch_step=100)
    with pytest.raises(ValueError, match="shape \\[K\\] = \\[3\\]"):
        update_domain_weights("doremi", W, step=0, losses=torch.zeros(2), ref_losses=torch.zeros(2))
    with pytest.raises(ValueError, match="either"):
        update_domain_weights("doremi", W, step=0, excess_loss=torch.zeros(3), losses=torch.zeros(3),
                              ref_losses=torch.zeros(3))
    with pytest.raises(ValueError, match="exactly one of"):
        update_domain_weights("doge", W, step=0, grads=GRADS, gram=GRADS @ GRADS.T, learning_rate=0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        update_domain_weights("doge", W, step=0, grads=GRADS, learning_rate=0.0)
    with pytest.raises(ValueError, match="exceed `target_losses`.*\\[1\\]"):
        update_domain_weights("velocitune", W, step=0, losses=[2.0, 2.0, 2.0], initial_losses=[3.0, 1.0, 3.0],
                              target_losses=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative integer"):
        update_domain_weights("doremi", W, step=-1, excess_loss=torch.zeros(3))


# --------------------------------------------------------------------------------------------------- Group DRO


def _group_dro_official(adv_probs, group_loss, step_size):
    # kohpangwei/group_DRO, loss.py, LossComputer.compute_robust_loss (no `adj`, no `normalize_loss`), transcribed:
    #     self.adv_probs = self.adv_probs * torch.exp(self.step_size*adjusted_loss.data)
    #     self.adv_probs = self.adv_probs/(self.adv_probs.sum())
    adv_probs = [p * math.exp(step_size * loss) for p, loss in zip(adv_probs, group_loss)]
    return [p / sum(adv_probs) for p in adv_probs]


def test_group_dro_matches_the_official_update_over_several_steps():
    losses = [[0.5, 2.0, 1.0], [0.4, 1.8, 1.2], [0.3, 1.9, 0.8], [0.6, 2.2, 0.9]]
    for step_size in (0.01, 0.5):
        state = DomainWeightState(torch.tensor([1 / 3] * 3))
        expected = [1 / 3] * 3
        worst = []
        for step, step_losses in enumerate(losses):
            state.record(update_domain_weights("group_dro", state.weights, step=step, losses=torch.tensor(step_losses),
                                               step_size=step_size))
            expected = _group_dro_official(expected, step_losses, step_size)
            _close(state.weights, expected)
            worst.append(state.weights[1].item())
        # group 1 has the highest loss at every step: its weight grows every step and is the largest
        assert all(later > earlier for earlier, later in zip([1 / 3, *worst], worst))
        assert state.weights.argmax().item() == 1
    # first step by hand: q ∝ exp(0.5 · [0.5, 2.0, 1.0])
    first = update_domain_weights("group_dro", torch.full((3,), 1 / 3), step=0, losses=torch.tensor(losses[0]),
                                  step_size=0.5)
    _close(first, _normalize([math.exp(0.25), math.exp(1.0), math.exp(0.5)]))
    assert get_domain_update("group_dro").hparams == {"step_size": 0.01}


def test_group_dro_absent_domain_counts_as_zero_loss_and_bad_step_size_fails():
    W = torch.tensor([0.5, 0.3, 0.2])
    new = update_domain_weights("group_dro", W, step=0, losses=torch.tensor([math.nan, 1.0, 2.0]), step_size=0.5)
    _close(new, _group_dro_official(W.tolist(), [0.0, 1.0, 2.0], 0.5))  # the code's group average of no rows is 0
    for bad in (0.0, -0.1, math.inf, True):
        with pytest.raises(ValueError, match="step_size"):
            validate_domain_update("group_dro", step_size=bad)
    with pytest.raises(ValueError, match="does not take"):
        validate_domain_update("group_dro", eta=1.0)
