"""Rewards: registry, format reward, DAPO overlong penalty, multi-objective weighting (hand-computed values)."""

import math
import pickle

import pytest
import torch

from alignment.reward_weightings import (
    FixedRewardWeighting,
    GradientRewardWeighting,
    HypervolumeRewardWeighting,
    gradient_weight_update,
    hypervolume_contribution,
    hypervolume_meta_reward,
    objective_influence,
    scalarize_rewards,
)
from alignment.reward_weightings.hypervolume import hypervolume
from alignment.rewards import (
    get_reward_function,
    get_reward_spec,
    list_rewards,
    register_reward,
    soft_overlong_penalty,
    validate_reward,
)

# ---------------------------------------------------------------- registry and TRL signature


def test_registered_rewards_have_the_trl_signature_and_are_named_for_logging():
    assert {"accuracy_reward", "format_reward", "overlong_penalty"} <= set(list_rewards())
    accuracy = get_reward_function("accuracy_reward")
    assert accuracy.__name__ == "accuracy_reward"
    assert accuracy(prompts=["2+2?", "2+2?"], completions=["4", "The answer is 5"], answer=["4", "4"],
                    completion_ids=[[1], [1, 2]], trainer_state=None) == [1.0, 0.0]
    assert get_reward_spec("accuracy_reward").columns == ("answer",)
    assert get_reward_spec("overlong_penalty").columns == ()  # completion_ids come from TRL, not the dataset


def test_reward_errors_list_the_valid_choices():
    with pytest.raises(ValueError, match="Valid names: .*accuracy_reward.*format_reward"):
        get_reward_function("acc")
    with pytest.raises(ValueError, match=r"does not take \['L_max'\].*max_length=<required>"):
        get_reward_function("overlong_penalty", L_max=10, max_length=10, cache_length=2)
    with pytest.raises(ValueError, match=r"needs \['max_length', 'cache_length'\]"):
        get_reward_function("overlong_penalty")
    with pytest.raises(ValueError, match="cache_length.*\\[0, max_length=10\\]"):
        validate_reward("overlong_penalty", max_length=10, cache_length=11)
    with pytest.raises(ValueError, match="style.*'bare', 'boxed', 'marker'"):
        validate_reward("format_reward", style="xml")
    with pytest.raises(ValueError, match="already registered"):
        register_reward("format_reward")(lambda completions, **kwargs: [])


def test_reward_functions_pickle_with_their_hyper_parameters():
    reward = get_reward_function("overlong_penalty", max_length=10, cache_length=4)
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == "overlong_penalty" and clone.hparams == {"max_length": 10, "cache_length": 4}
    assert clone(completions=["a"], completion_ids=[[0] * 8]) == [-0.5]


# ---------------------------------------------------------------- format reward


@pytest.mark.parametrize("text,bare,boxed,marker", [
    ("42", 1, 0, 0),
    ("  -1,234.  <|im_end|>", 1, 0, 0),
    ("olleh", 1, 0, 0),
    ("The answer is 42", 0, 0, 1),
    ("3 + 4 = 7", 0, 0, 0),
    ("so \\boxed{7}", 0, 1, 0),
    ("\\boxed{ }", 0, 0, 0),
    ("#### 12", 0, 0, 1),
    ("", 0, 0, 0),
])
def test_format_reward_styles(text, bare, boxed, marker):
    for style, expected in (("bare", bare), ("boxed", boxed), ("marker", marker)):
        reward = get_reward_function("format_reward", style=style)
        assert reward(completions=[text]) == [float(expected)], style


def test_format_reward_reads_conversational_completions():
    reward = get_reward_function("format_reward")
    completions = [[{"role": "assistant", "content": "7"}], [{"role": "assistant", "content": "It is 7."}]]
    assert reward(prompts=None, completions=completions) == [1.0, 0.0]


# ---------------------------------------------------------------- DAPO soft overlong penalty


def test_soft_overlong_penalty_piecewise_values():
    # L_max = 20, L_cache = 8: free up to 12, then linear to −1 at 20, −1 beyond.
    assert soft_overlong_penalty(5, 20, 8) == 0.0
    assert soft_overlong_penalty(12, 20, 8) == 0.0
    assert soft_overlong_penalty(13, 20, 8) == pytest.approx(-1 / 8)
    assert soft_overlong_penalty(16, 20, 8) == pytest.approx(-0.5)
    assert soft_overlong_penalty(20, 20, 8) == pytest.approx(-1.0)
    assert soft_overlong_penalty(21, 20, 8) == -1.0
    # No soft zone: only beyond L_max.
    assert [soft_overlong_penalty(n, 20, 0) for n in (20, 21)] == [0.0, -1.0]


def test_overlong_penalty_reward_uses_completion_token_counts():
    reward = get_reward_function("overlong_penalty", max_length=100, cache_length=20)
    ids = [[1] * 50, [1] * 90, [1] * 100]
    assert reward(completions=["a", "b", "c"], completion_ids=ids) == pytest.approx([0.0, -0.5, -1.0])
    with pytest.raises(ValueError, match="completion_ids"):
        reward(completions=["a"])


# ---------------------------------------------------------------- scalarisation


def test_scalarize_rewards_fixed_weights():
    rewards = torch.tensor([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]], dtype=torch.float64)
    assert scalarize_rewards(rewards, [0.5, 0.3, 0.2]).tolist() == pytest.approx([0.4, 0.3])
    fixed = FixedRewardWeighting([0.5, 0.3, 0.2], names=["accuracy", "format", "length"])
    assert fixed.scalarize(rewards).tolist() == pytest.approx([0.4, 0.3])
    assert fixed.log_dict() == pytest.approx({"reward_weight/accuracy": 0.5, "reward_weight/format": 0.3,
                                              "reward_weight/length": 0.2})
    with pytest.raises(ValueError, match="K=3"):
        scalarize_rewards(torch.ones(2, 2), [0.5, 0.3, 0.2])
    with pytest.raises(ValueError, match="non-negative"):
        scalarize_rewards(torch.ones(2, 2), [0.5, -0.3])


# ---------------------------------------------------------------- (a) hypervolume


def test_hypervolume_two_dimensional_hand_example():
    # Reference (0, 0), points (3, 1) and (1, 2): boxes of area 3 and 2 overlapping in [0,1]×[0,1] → 3 + 2 − 1 = 4.
    assert hypervolume(torch.tensor([[3.0, 1.0], [1.0, 2.0]]), torch.tensor([0.0, 0.0])) == pytest.approx(4.0)
    # Adding (2, 2) covers [1,2]×[1,2] more: contribution 1.
    buffer = [[0.0, 0.0], [3.0, 1.0], [1.0, 2.0]]
    assert hypervolume_contribution(buffer, [2.0, 2.0]) == pytest.approx(1.0)
    # A dominated point contributes nothing; a point worse than the reference dominates nothing.
    assert hypervolume_contribution(buffer, [1.0, 1.0]) == pytest.approx(0.0)
    assert hypervolume_contribution([[0.0, 0.0]], [-1.0, 5.0]) == pytest.approx(0.0)


def test_hypervolume_with_a_minimised_objective_and_three_dimensions():
    # Objective 2 (e.g. length) is minimised: reference (0, 10), point (2, 4) → box 2 × 6 = 12.
    assert hypervolume(torch.tensor([[2.0, 4.0]]), torch.tensor([0.0, 10.0]), maximize=[True, False]) == 12.0
    # 3-D: unit-cube corners (2,1,1) and (1,2,1) from the origin: 2 + 2 − 1 = 3.
    assert hypervolume(torch.tensor([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0]]), torch.zeros(3)) == pytest.approx(3.0)


def test_meta_reward_values():
    assert hypervolume_meta_reward(0.0) == 0.5
    assert hypervolume_meta_reward(-3.0) == 0.5
    assert hypervolume_meta_reward(1.0) == pytest.approx(0.5 + 1.5 * math.tanh(1.0))
    assert 1.99 < hypervolume_meta_reward(5.0) < 2.0 and hypervolume_meta_reward(100.0) <= 2.0


def test_hypervolume_weighting_updates_buffer_and_round_trips_its_state():
    weighting = HypervolumeRewardWeighting([0.6, 0.4], reference_point=[0.0, 0.0], names=["acc", "fmt"])
    assert weighting.meta_reward == 1.0
    m = weighting.update([0.5, 0.4])  # contribution 0.2
    assert m == pytest.approx(0.5 + 1.5 * math.tanh(0.2))
    assert weighting.weights.tolist() == pytest.approx([0.6 * m, 0.4 * m])
    assert weighting.scalarize(torch.tensor([[1.0, 1.0]], dtype=torch.float64)).tolist() == pytest.approx([m])
    assert weighting.update([0.4, 0.3]) == 0.5  # dominated: no contribution, not added
    assert weighting.buffer == [[0.0, 0.0], [0.5, 0.4]]
    assert weighting.log_dict()["reward_weight/meta_reward"] == 0.5

    restored = HypervolumeRewardWeighting([0.6, 0.4], reference_point=[0.0, 0.0])
    restored.load_state_dict(pickle.loads(pickle.dumps(weighting.state_dict())))
    assert restored.buffer == weighting.buffer and restored.meta_reward == weighting.meta_reward
    # Contribution of (0.6, 0.5) over the front {(0.5, 0.4)}: 0.30 − 0.20 = 0.10, in both copies.
    assert restored.update([0.6, 0.5]) == pytest.approx(0.5 + 1.5 * math.tanh(0.1))
    assert weighting.update([0.6, 0.5]) == pytest.approx(restored.meta_reward)


# ---------------------------------------------------------------- (b) gradient-based weights


def test_objective_influence_includes_the_self_term():
    g = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]], dtype=torch.float64)
    # Gram matrix rows: [1, 1, 0], [1, 2, −2], [0, −2, 4].
    assert objective_influence(g).tolist() == pytest.approx([2.0, 1.0, 2.0])


def test_softmax_weight_update_hand_values():
    # log w + η·s/λ with w = (0.5, 0.5), s = (1, 0), η/λ = 1e-5/1e-5 = 1 → softmax(log .5 + 1, log .5) = (e, 1)/(e+1).
    new = gradient_weight_update([0.5, 0.5], [1.0, 0.0], lr=1e-5, regularization=1e-5)
    assert new.tolist() == pytest.approx([math.e / (math.e + 1), 1 / (math.e + 1)])
    # Three objectives, unequal start: w_k ∝ w_k·exp(η s_k/λ).
    w, s = [0.2, 0.3, 0.5], [2.0, -1.0, 0.0]
    unnormalised = [wk * math.exp(0.5 * sk) for wk, sk in zip(w, s)]
    expected = [u / sum(unnormalised) for u in unnormalised]
    assert gradient_weight_update(w, s, lr=0.5, regularization=1.0).tolist() == pytest.approx(expected)
    # lr = 0 keeps the weights.
    assert gradient_weight_update(w, s, lr=0.0).tolist() == pytest.approx(w)


def test_weights_stay_a_distribution_under_repeated_updates():
    torch.manual_seed(0)
    weighting = GradientRewardWeighting(num_objectives=3, regularization=1e-5)
    for _ in range(20):
        weighting.accumulate(torch.randn(3, 16) * 10)
        assert weighting.step(lr=1e-6)
        w = weighting.weights
        assert (w >= 0).all() and float(w.sum()) == pytest.approx(1.0)


def test_gradient_weighting_accumulates_then_updates_and_round_trips_its_state():
    weighting = GradientRewardWeighting([0.5, 0.5], accumulation_steps=2, regularization=1.0, names=["acc", "len"])
    weighting.accumulate(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # s = (1, 0)
    assert not weighting.step(lr=1.0)
    assert weighting.weights.tolist() == pytest.approx([0.5, 0.5])
    snapshot = weighting.state_dict()
    weighting.accumulate(torch.tensor([[3.0, 0.0], [0.0, 0.0]]))  # s = (9, 0); mean over the window (1 + 9)/2 = 5
    assert weighting.step(lr=1.0)
    assert weighting.weights.tolist() == pytest.approx([math.exp(5) / (math.exp(5) + 1), 1 / (math.exp(5) + 1)])
    assert weighting.log_dict()["reward_influence/acc"] == pytest.approx(5.0)

    resumed = GradientRewardWeighting([0.5, 0.5], accumulation_steps=2, regularization=1.0)
    resumed.load_state_dict(snapshot)
    resumed.accumulate(torch.tensor([[3.0, 0.0], [0.0, 0.0]]))
    assert resumed.step(lr=1.0)
    assert torch.allclose(resumed.weights, weighting.weights)


def test_gradient_weighting_reset_option_matches_the_official_running_sum():
    kept = GradientRewardWeighting([0.5, 0.5], regularization=1.0, reset_after_update=False)
    reset = GradientRewardWeighting([0.5, 0.5], regularization=1.0)
    for weighting in (kept, reset):
        for _ in range(2):
            weighting.accumulate(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # s = (1, 0) each step
            weighting.step(lr=1.0)
    # Reset: two steps of +1 → logits (2, 0). Running sum: +1 then +2 → logits (3, 0).
    assert reset.weights[0].item() == pytest.approx(math.exp(2) / (math.exp(2) + 1))
    assert kept.weights[0].item() == pytest.approx(math.exp(3) / (math.exp(3) + 1))


def test_weighting_errors():
    with pytest.raises(ValueError, match="sum to 1"):
        GradientRewardWeighting([0.5, 0.6])
    with pytest.raises(ValueError, match="accumulation_steps"):
        GradientRewardWeighting(num_objectives=2, accumulation_steps=0)
    with pytest.raises(ValueError, match="regularization"):
        gradient_weight_update([0.5, 0.5], [0.0, 0.0], lr=1.0, regularization=0.0)
    with pytest.raises(ValueError, match="reference_point"):
        HypervolumeRewardWeighting([0.5, 0.5], reference_point=[0.0])
