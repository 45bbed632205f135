"""Advantage estimators: hand-computed values (with `statistics`/`math`, not torch), defining limits, registry errors."""

import math
import statistics

import pytest
import torch

from alignment.advantages import (
    compute_advantages,
    get_advantage_estimator,
    list_advantage_estimators,
    register_advantage_estimator,
    resolve_loss_type,
    validate_advantage_estimator,
)


def binary_group(num_correct: int, group_size: int = 8) -> list[float]:
    return [1.0] * num_correct + [0.0] * (group_size - num_correct)


def advantages(name, groups, **kwargs):
    """Advantages of ``groups`` (a list of equal-size reward lists) as a list of lists."""
    group_size = len(groups[0])
    flat = torch.tensor([r for group in groups for r in group])
    return compute_advantages(name, flat, group_size, **kwargs).view(len(groups), group_size).tolist()


def flatten(values):
    return [x for v in values for x in (flatten(v) if isinstance(v, (list, tuple)) else [v])]


class approx:
    """`pytest.approx` for (possibly nested) lists of floats."""

    def __init__(self, expected, abs=1e-6):
        self.expected = pytest.approx(flatten(expected), abs=abs)

    def __eq__(self, other):
        return flatten(other) == self.expected

    def __repr__(self):
        return repr(self.expected)


# ---------------------------------------------------------------- NGRPO


# The issue's table (methods.md §3) for binary rewards, G=8: (num_correct, advantage of wrong, advantage of correct).
NGRPO_TABLE = [(0, -0.333, None), (1, -0.504, 1.764), (4, -1.054, 0.843), (8, None, 0.0)]


@pytest.mark.parametrize("num_correct,wrong,correct", NGRPO_TABLE)
def test_ngrpo_matches_the_issue_table_and_an_independent_derivation(num_correct, wrong, correct):
    group = binary_group(num_correct)
    augmented = group + [1.0]  # one virtual sample with r_max = 1
    mu, sigma = statistics.mean(augmented), statistics.stdev(augmented)  # stdev: Bessel-corrected (G + k − 1)
    got = advantages("ngrpo", [group])[0]
    assert got == approx([(r - mu) / (sigma + 1e-6) for r in group])
    if wrong is not None:
        assert got[-1] == pytest.approx(wrong, abs=5e-4)
    if correct is not None:
        assert got[0] == pytest.approx(correct, abs=5e-4)


def test_ngrpo_closed_forms():
    # All wrong, G=8: μ' = 1/9, σ'² = (8·(1/9)² + (8/9)²)/8 = 1/9, so A = −(1/9)/(1/3) = −1/3 exactly.
    assert advantages("ngrpo", [binary_group(0)])[0] == approx([-1 / 3] * 8, abs=1e-5)
    # One correct: μ' = 2/9, σ'² = (7·(2/9)² + 2·(7/9)²)/8 = 7/36, so A_wrong = −(2/9)/√(7/36) = −4/(3√7).
    got = advantages("ngrpo", [binary_group(1)])[0]
    assert got[1] == pytest.approx(-4 / (3 * math.sqrt(7)), abs=1e-5)
    assert got[0] == pytest.approx(14 / (3 * math.sqrt(7)), abs=1e-5)


def test_ngrpo_gives_all_wrong_groups_a_negative_signal_where_grpo_gives_none():
    assert advantages("grpo", [binary_group(0)])[0] == approx([0.0] * 8)
    assert all(a < 0 for a in advantages("ngrpo", [binary_group(0)])[0])
    # All-correct groups carry no signal under either.
    assert advantages("ngrpo", [binary_group(8)])[0] == approx([0.0] * 8)


def test_ngrpo_options():
    group = [0.0, 0.5, 1.0, 0.0]
    # k = 2 virtual samples at r_max = 2, population std.
    augmented = group + [2.0, 2.0]
    mu, sigma = statistics.mean(augmented), statistics.pstdev(augmented)
    got = advantages("ngrpo", [group], k=2, r_max=2.0, unbiased=False)[0]
    assert got == approx([(r - mu) / (sigma + 1e-6) for r in group])
    # k = 0 is GRPO with the same eps.
    assert advantages("ngrpo", [group], k=0) == approx(advantages("grpo", [group], eps=1e-6))
    # A single completion per prompt: the official code's mean 0 / std 1.
    assert advantages("ngrpo", [[0.0], [1.0]]) == approx([[0.0], [1 / (1 + 1e-6)]])


# ---------------------------------------------------------------- GRPO / Dr. GRPO


def test_grpo_hand_values_and_zero_for_uniform_groups():
    groups = [binary_group(1), binary_group(4), binary_group(0)]
    got = advantages("grpo", groups)
    # Bessel-corrected std as in TRL: 1 of 8 correct has std √(1/8), so A = 0.875/√(1/8) = 2.4749 (− eps).
    assert got[0][0] == pytest.approx(0.875 / (math.sqrt(1 / 8) + 1e-4), abs=1e-5)
    assert got[0][1] == pytest.approx(-0.125 / (math.sqrt(1 / 8) + 1e-4), abs=1e-5)
    assert got[1][0] == pytest.approx(0.5 / (math.sqrt(2 / 7) + 1e-4), abs=1e-5)
    assert got[2] == approx([0.0] * 8)


def test_dr_grpo_is_grpo_without_the_std_division():
    groups = [[0.2, 0.9, 0.4, 0.1], [3.0, 1.0, 2.0, 2.0]]
    dr = advantages("dr_grpo", groups)
    assert dr == approx([[r - statistics.mean(g) for r in g] for g in groups])
    grpo = advantages("grpo", groups)
    for g, dr_row, grpo_row in zip(groups, dr, grpo):
        assert grpo_row == approx([a / (statistics.stdev(g) + 1e-4) for a in dr_row], abs=1e-5)
    assert advantages("grpo", groups, scale_rewards="none") == approx(dr)


def test_grpo_batch_scaling_uses_the_batch_std_and_the_group_mean():
    groups = [[0.0, 1.0], [2.0, 4.0]]
    batch_std = statistics.stdev([0.0, 1.0, 2.0, 4.0])
    expected = [[(r - statistics.mean(g)) / (batch_std + 1e-4) for r in g] for g in groups]
    assert advantages("grpo", groups, scale_rewards="batch") == approx(expected)


# ---------------------------------------------------------------- RLOO / ReMax


def test_rloo_hand_values():
    # Baselines: (0+0+2)/3, (1+0+2)/3, (1+0+2)/3, (1+0+0)/3.
    assert advantages("rloo", [[1.0, 0.0, 0.0, 2.0]]) == approx([[1 / 3, -1.0, -1.0, 5 / 3]])


def test_rloo_baseline_excludes_the_sample_itself():
    base = [0.3, 0.7, 0.1, 0.9]
    bumped = [1.3, 0.7, 0.1, 0.9]
    a, b = advantages("rloo", [base])[0], advantages("rloo", [bumped])[0]
    assert b[0] - a[0] == pytest.approx(1.0)  # its own baseline did not move
    assert all(bo - ao == pytest.approx(-1 / 3) for ao, bo in zip(a[1:], b[1:]))  # the others' baselines did
    with pytest.raises(ValueError, match="group_size >= 2"):
        advantages("rloo", [[1.0], [0.0]])


def test_remax_subtracts_the_greedy_reward_of_the_same_prompt():
    got = advantages("remax", [[1.0, 0.0], [0.5, 0.5]], baseline_rewards=torch.tensor([0.5, 1.0]))
    assert got == approx([[0.5, -0.5], [-0.5, -0.5]])
    # The paper's setting: one sample per prompt.
    assert advantages("remax", [[1.0], [0.0]], baseline_rewards=torch.tensor([1.0, 0.0])) == approx([[0.0], [0.0]])
    with pytest.raises(ValueError, match="baseline_rewards"):
        advantages("remax", [[1.0, 0.0]])
    with pytest.raises(ValueError, match=r"baseline_rewards.*shape \[1\]"):
        advantages("remax", [[1.0, 0.0]], baseline_rewards=torch.tensor([1.0, 0.0]))


# ---------------------------------------------------------------- DRPO


def test_drpo_hand_values_uniform_negatives():
    # L_max = 4, λ = 0.1: correct completions of length 2 and 4 have length scores (1 − 2/4)/0.1 = 5 and 0.
    got = advantages("drpo", [[1.0, 1.0, 0.0, 0.0]], completion_lengths=torch.tensor([2, 4, 1, 3]),
                     max_completion_length=4)[0]
    w_short = math.exp(5) / (math.exp(5) + 1)
    assert got == approx([4 * w_short, 4 * (1 - w_short), -2.0, -2.0], abs=1e-5)


def test_drpo_hand_values_with_scores():
    logps = torch.tensor([-1.0, -1.0, -2.0, -4.0, -0.5, -0.5, -0.5, -0.5])
    got = advantages("drpo", [[0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]],
                     completion_lengths=torch.tensor([3, 3, 2, 1, 1, 2, 3, 4]), max_completion_length=4,
                     completion_mean_logps=logps, tau=10.0)
    z = math.exp(-0.1) + math.exp(-0.2) + math.exp(-0.4)  # softmax of s/τ over the three wrong completions
    assert got[0] == approx([-4 * math.exp(-0.1) / z, 4.0, -4 * math.exp(-0.2) / z, -4 * math.exp(-0.4) / z], abs=1e-5)
    assert got[1] == approx([0.0] * 4)  # all correct: dropped


def test_drpo_all_correct_and_all_wrong_groups_get_zero_and_correct_beats_wrong():
    lengths = torch.tensor([1, 5, 8, 2, 3, 4, 8, 8, 8, 1, 1, 1])
    got = advantages("drpo", [[1.0] * 4, [0.0] * 4, [1.0, 1.0, 1.0, 0.0]], completion_lengths=lengths,
                     max_completion_length=8)
    assert got[0] == approx([0.0] * 4)
    assert got[1] == approx([0.0] * 4)
    # Decoupling: the longest correct completion still gets a positive advantage, the short wrong one a negative one.
    assert got[2][0] > 0 and got[2][3] < 0
    assert got[2][1] == pytest.approx(got[2][2]) and got[2][1] > 0
    with pytest.raises(ValueError, match="max_completion_length"):
        advantages("drpo", [[1.0, 0.0]], completion_lengths=torch.tensor([9, 1]), max_completion_length=8)
    # Correctness is reward >= correct_threshold, so a small format bonus does not make a wrong answer "correct".
    shaped = advantages("drpo", [[1.1, 0.1, 0.0, 1.0]], completion_lengths=torch.tensor([4, 4, 4, 4]),
                        max_completion_length=8)[0]
    assert shaped == approx([2.0, -2.0, -2.0, 2.0])


def test_drpo_advantages_reproduce_the_drpo_gradient_under_a_per_sequence_token_mean_loss():
    """−(1/N) Σ A_i s_i has the gradient of DRPO's −(1/#prompts) Σ_groups J (J written out here independently)."""
    group_size, tau, lam, l_max = 4, 10.0, 0.1, 6
    rewards = [[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    lengths = [[2, 5, 6, 1], [3, 3, 3, 3], [4, 2, 6, 1]]
    scores = torch.tensor([[-0.3, -1.2, -0.8, -2.0], [-1.0, -1.0, -1.0, -1.0], [-0.6, -0.1, -3.0, -0.9]],
                          requires_grad=True)
    drpo_objective = 0.0
    for g in range(3):
        pos = [i for i in range(group_size) if rewards[g][i] == 1.0]
        neg = [i for i in range(group_size) if rewards[g][i] == 0.0]
        if not pos or not neg:
            continue
        w = [math.exp((1 - lengths[g][i] / l_max) / lam) for i in pos]
        pos_term = sum(wi / sum(w) * scores[g, i] for wi, i in zip(w, pos))
        neg_term = tau * torch.logsumexp(torch.stack([scores[g, j] / tau for j in neg]), dim=0)
        drpo_objective = drpo_objective + pos_term - neg_term
    (-drpo_objective / 3).backward()
    expected_grad = scores.grad.clone()

    adv = compute_advantages("drpo", torch.tensor(rewards).view(-1), group_size,
                             completion_lengths=torch.tensor(lengths).view(-1), max_completion_length=l_max,
                             completion_mean_logps=scores.detach().view(-1), tau=tau, length_lambda=lam)
    scores.grad = None
    (-(adv * scores.view(-1)).mean()).backward()
    assert torch.allclose(scores.grad, expected_grad, atol=1e-6)


# ---------------------------------------------------------------- HAPO


def test_hapo_token_weighted_statistics():
    # Rewards [1, 0] with lengths [3, 1]: μ = 3/4, σ² = (3·(1/4)² + 1·(3/4)²)/4 = 3/16.
    got = advantages("hapo", [[1.0, 0.0]], completion_lengths=torch.tensor([3, 1]))[0]
    sigma = math.sqrt(3 / 16)
    assert got == approx([0.25 / (sigma + 1e-6), -0.75 / (sigma + 1e-6)], abs=1e-5)
    # Equal lengths: population std of the rewards.
    group = [1.0, 0.0, 0.0, 0.5]
    got = advantages("hapo", [group], completion_lengths=torch.tensor([7, 7, 7, 7]))[0]
    mu, sigma = statistics.mean(group), statistics.pstdev(group)
    assert got == approx([(r - mu) / (sigma + 1e-6) for r in group], abs=1e-5)


def test_hapo_falls_back_to_grpo_when_an_advantage_reaches_the_threshold():
    # Lengths [100, 1], rewards [0, 1]: μ = 1/101, σ = 10/101, so the correct completion would get A = 10 >= 5.
    got = advantages("hapo", [[0.0, 1.0]], completion_lengths=torch.tensor([100, 1]))[0]
    grpo_std = statistics.stdev([0.0, 1.0])
    assert got == approx([-0.5 / (grpo_std + 1e-6), 0.5 / (grpo_std + 1e-6)], abs=1e-5)
    # A higher threshold keeps the token-level advantage.
    got = advantages("hapo", [[0.0, 1.0]], completion_lengths=torch.tensor([100, 1]), fallback_threshold=11.0)[0]
    assert got == approx([-0.1, 10.0], abs=1e-3)


# ---------------------------------------------------------------- registry


def test_every_estimator_validates_with_its_defaults_and_documents_itself():
    assert {"grpo", "dr_grpo", "ngrpo", "rloo", "remax", "drpo", "hapo"} <= set(list_advantage_estimators())
    for name in list_advantage_estimators():
        validate_advantage_estimator(name)
        assert "arXiv" in get_advantage_estimator(name).fn.__doc__ or name == "rloo"
    assert get_advantage_estimator("remax").requires == ("baseline_rewards",)
    assert get_advantage_estimator("drpo").requires == ("completion_lengths", "max_completion_length")
    assert get_advantage_estimator("ngrpo").hparams == {"k": 1, "r_max": 1.0, "eps": 1e-6, "unbiased": True}


def test_errors_name_the_field_and_the_valid_choices():
    rewards = torch.tensor([0.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="Valid names: .*dr_grpo.*grpo.*ngrpo"):
        compute_advantages("gpro", rewards, 2)
    with pytest.raises(ValueError, match=r"does not take \['epsilon'\].*eps=0.0001"):
        compute_advantages("grpo", rewards, 2, epsilon=0.1)
    with pytest.raises(ValueError, match="scale_rewards.*'group', 'batch', 'none'"):
        validate_advantage_estimator("grpo", scale_rewards="groups")
    with pytest.raises(ValueError, match="`eps` must be a number > 0"):
        validate_advantage_estimator("ngrpo", eps=0.0)
    with pytest.raises(ValueError, match="`k`"):
        validate_advantage_estimator("ngrpo", k=-1)
    with pytest.raises(ValueError, match="`tau`"):
        validate_advantage_estimator("drpo", tau=0)
    with pytest.raises(ValueError, match="completion_lengths.*max_completion_length"):
        compute_advantages("drpo", rewards, 2)
    with pytest.raises(ValueError, match="multiple of group_size=3"):
        compute_advantages("grpo", rewards, 3)
    with pytest.raises(ValueError, match="group_size"):
        compute_advantages("grpo", rewards, 0)
    with pytest.raises(ValueError, match="non-finite"):
        compute_advantages("grpo", torch.tensor([0.0, float("nan")]), 2)
    with pytest.raises(ValueError, match="max_completion_length` must be a positive int"):
        compute_advantages("drpo", rewards, 2, completion_lengths=torch.ones(4), max_completion_length=0)


def test_loss_type_resolution_follows_the_estimator():
    # drpo's advantages reproduce its gradient only under the per-sequence token mean (see its docstring).
    assert get_advantage_estimator("drpo").loss_type == "grpo"
    assert get_advantage_estimator("grpo").loss_type is None
    assert resolve_loss_type("drpo", None, default="dapo") == "grpo"
    assert resolve_loss_type("drpo", "grpo", default="dapo") == "grpo"
    assert resolve_loss_type("ngrpo", None, default="dapo") == "dapo"
    assert resolve_loss_type("ngrpo", "bnpo", default="dapo") == "bnpo"
    with pytest.raises(ValueError, match="'drpo' needs `loss_type: grpo`.*got `loss_type: dr_grpo`.*remove"):
        resolve_loss_type("drpo", "dr_grpo", default="dapo")
    with pytest.raises(ValueError, match="Valid names"):
        resolve_loss_type("gpro", None, default="dapo")


def test_inputs_an_estimator_does_not_use_are_accepted_and_ignored():
    rewards = torch.tensor([0.0, 1.0, 1.0, 1.0])
    plain = compute_advantages("grpo", rewards, 2)
    assert torch.equal(compute_advantages("grpo", rewards, 2, completion_lengths=torch.ones(4)), plain)


def test_registration_rejects_malformed_estimators():
    with pytest.raises(ValueError, match="unknown inputs"):
        register_advantage_estimator("bad_inputs", requires=("lengths",))
    with pytest.raises(ValueError, match="already registered"):
        register_advantage_estimator("grpo")(lambda rewards: rewards)

    def needs_lengths_without_declaring(rewards, *, completion_lengths):
        return rewards

    with pytest.raises(ValueError, match="must be exactly the required inputs"):
        register_advantage_estimator("undeclared")(needs_lengths_without_declaring)
    assert "undeclared" not in list_advantage_estimators()


def test_output_is_detached_flat_and_keeps_dtype():
    rewards = torch.tensor([0.0, 1.0, 0.5, 0.5], dtype=torch.float64, requires_grad=True)
    out = compute_advantages("ngrpo", rewards, 2)
    assert out.shape == (4,) and out.dtype == torch.float64 and not out.requires_grad


# ----------------------------------------------------------------------------- declared scale invariance
def _probed_scale_invariance(name, kwargs):
    """The numeric probe reward weighting used before `scale_invariant` was declared: same advantages for rewards and
    3x the rewards (of order 100, so the estimators' small eps added to a std does not hide an invariance)."""
    rewards = 100 * torch.tensor([0.0, 1.0, 0.25, 2.0, 1.0, 0.5], dtype=torch.float64)
    inputs = {"completion_lengths": torch.tensor([3, 1, 2, 4, 2, 5]), "max_completion_length": 8,
              "completion_mean_logps": torch.tensor([-1.0, -0.5, -2.0, -1.5, -0.7, -1.2])}
    base = compute_advantages(name, rewards, 3, baseline_rewards=torch.tensor([50.0, 100.0]), **inputs, **kwargs)
    scaled = compute_advantages(name, 3 * rewards, 3, baseline_rewards=torch.tensor([150.0, 300.0]), **inputs,
                                **kwargs)
    return torch.allclose(base, scaled, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "name, kwargs, invariant",
    [
        ("grpo", {}, True),
        ("grpo", {"scale_rewards": "batch"}, True),
        ("grpo", {"scale_rewards": "none"}, False),
        ("dr_grpo", {}, False),
        ("drpo", {}, True),
        ("hapo", {}, True),
        ("hapo", {"scale_by_std": False}, False),
        ("ngrpo", {}, False),
        ("ngrpo", {"k": 0}, True),
        ("remax", {}, False),
        ("rloo", {}, False),
    ],
)
def test_declared_scale_invariance_matches_the_numeric_probe(name, kwargs, invariant):
    assert get_advantage_estimator(name).is_scale_invariant(kwargs) is invariant
    assert _probed_scale_invariance(name, kwargs) is invariant


def test_every_estimator_declares_scale_invariance():
    for name in list_advantage_estimators():
        assert isinstance(get_advantage_estimator(name).is_scale_invariant(), bool)
    with pytest.raises(ValueError, match="declare `scale_invariant`"):
        register_advantage_estimator("_undeclared_scale")(lambda rewards: rewards)
    assert "_undeclared_scale" not in list_advantage_estimators()


def test_hypervolume_weighting_is_refused_exactly_for_scale_invariant_configurations():
    from types import SimpleNamespace

    from alignment.trainers.reward_weighting import check_reward_weighting_config

    def check(estimator, kwargs):
        check_reward_weighting_config(SimpleNamespace(reward_weighting="hypervolume", reward_weighting_kwargs={},
                                                      eval_strategy="steps", advantage_estimator=estimator,
                                                      advantage_kwargs=kwargs), num_rewards=2)

    for estimator, kwargs in [("grpo", {}), ("hapo", {}), ("ngrpo", {"k": 0})]:
        with pytest.raises(ValueError, match="normalises away"):
            check(estimator, kwargs)
    for estimator, kwargs in [("grpo", {"scale_rewards": "none"}), ("dr_grpo", {}), ("rloo", {}), ("ngrpo", {})]:
        check(estimator, kwargs)


# ----------------------------------------------------------------------------- extending the family
NEW_ESTIMATOR_FILE = '''
"""A throwaway estimator: the whole of what a new method needs (plus its import line in the package __init__)."""

import torch

from alignment.advantages.registry import register_advantage_estimator


@register_advantage_estimator("_test_max_baseline", scale_invariant=False)
def max_baseline_advantages(rewards: torch.Tensor, *, offset: float = 0.0) -> torch.Tensor:
    """Max-baseline test estimator: A_i = r_i - max_g r + offset."""
    return rewards - rewards.max(dim=1, keepdim=True).values + offset
'''


def test_a_new_estimator_is_one_file(tmp_path):
    import importlib.util

    from alignment.advantages import ADVANTAGE_ESTIMATORS

    path = tmp_path / "max_baseline.py"
    path.write_text(NEW_ESTIMATOR_FILE)
    module_spec = importlib.util.spec_from_file_location("_test_max_baseline_module", path)
    try:
        module_spec.loader.exec_module(importlib.util.module_from_spec(module_spec))  # what the __init__ import does
        assert "_test_max_baseline" in list_advantage_estimators()
        validate_advantage_estimator("_test_max_baseline", offset=0.5)
        out = compute_advantages("_test_max_baseline", torch.tensor([0.0, 1.0, 2.0, 2.0]), 2, offset=0.5)
        torch.testing.assert_close(out, torch.tensor([-0.5, 0.5, 0.5, 0.5]))
        with pytest.raises(ValueError, match=r"does not take \['offsett'\].*offset=0.0"):
            validate_advantage_estimator("_test_max_baseline", offsett=1.0)
        assert "_test_max_baseline: Max-baseline test estimator" in ADVANTAGE_ESTIMATORS.describe()
    finally:
        if "_test_max_baseline" in ADVANTAGE_ESTIMATORS:
            ADVANTAGE_ESTIMATORS.unregister("_test_max_baseline")
    assert "_test_max_baseline" not in list_advantage_estimators()
