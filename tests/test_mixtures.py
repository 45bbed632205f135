"""Temperature shares, the Cooldown schedule, and share-based dataset mixtures (counts, policies, loading)."""

import json
import math
from collections import Counter

import pytest
import torch
from datasets import Dataset

from alignment.configs import AlignmentScriptArguments, ShareMixtureConfig
from alignment.data_loading import load_recipe_datasets
from alignment.domain_rules import update_domain_weights
from alignment.mixtures import (
    CooldownSchedule,
    build_share_mixture,
    mixture_counts,
    mixture_indices,
    realized_shares,
    scalarization_weights,
    temperature_shares,
)

SIZES = [100, 10, 1]


def _close(tensor, expected, tol=1e-9):
    assert list(map(float, tensor)) == pytest.approx(expected, abs=tol)


# -------------------------------------------------------------------------------------------------- temperature


def test_temperature_one_is_proportional_and_two_is_square_root():
    _close(temperature_shares(SIZES, 1.0), [100 / 111, 10 / 111, 1 / 111])
    roots = [math.sqrt(n) for n in SIZES]
    _close(temperature_shares(SIZES, 2.0), [r / sum(roots) for r in roots])
    # τ < 1 sharpens toward the largest domain, without overflow for large sizes
    sharp = temperature_shares([10**9, 10**8], 0.01)
    assert sharp[0] == pytest.approx(1.0) and torch.isfinite(sharp).all()


def test_temperature_to_infinity_is_uniform_and_empty_domains_get_nothing():
    _close(temperature_shares(SIZES, math.inf), [1 / 3] * 3)
    _close(temperature_shares(SIZES, 1e6), [1 / 3] * 3, tol=1e-4)
    _close(temperature_shares([50, 0, 50], 5.0), [0.5, 0.0, 0.5])


def test_scalarization_weights_match_temperature_shares_in_expectation():
    weights = scalarization_weights(SIZES, 5.0)
    p5 = [n ** 0.2 / sum(m ** 0.2 for m in SIZES) for n in SIZES]
    _close(weights, [p / (n / 111) for p, n in zip(p5, SIZES)])
    # sampling proportionally and weighting by w gives the τ-shares: Σ_i p(i;1) w_i = 1
    assert float((temperature_shares(SIZES, 1.0) * weights).sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        temperature_shares(SIZES, temperature)


def test_bad_sizes():
    with pytest.raises(ValueError, match="not all zero"):
        temperature_shares([0, 0], 1.0)


# ------------------------------------------------------------------------------------------------------ Cooldown


def test_cooldown_switches_at_the_configured_step():
    schedule = CooldownSchedule(high_temperature=5.0, low_temperature=1.0, switch_step=30)
    assert [schedule.temperature_at(s) for s in (0, 29, 30, 31, 1000)] == [5.0, 5.0, 1.0, 1.0, 1.0]
    p5 = [n ** 0.2 / sum(m ** 0.2 for m in SIZES) for n in SIZES]
    _close(schedule.shares_at(29, SIZES), p5)
    _close(schedule.shares_at(30, SIZES), [n / 111 for n in SIZES])
    assert CooldownSchedule.halfway(60_000).switch_step == 30_000  # the paper's 30k + 30k MT schedule


def test_cooldown_through_the_update_registry_uses_the_step():
    uniform = torch.full((3,), 1 / 3)
    before = update_domain_weights("cooldown", uniform, step=9, sizes=SIZES, switch_step=10)
    after = update_domain_weights("cooldown", uniform, step=10, sizes=SIZES, switch_step=10)
    _close(before, [n ** 0.2 / sum(m ** 0.2 for m in SIZES) for n in SIZES], tol=1e-6)
    _close(after, [n / 111 for n in SIZES], tol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"high_temperature": 0.0}, "high_temperature"),
    ({"low_temperature": -1.0}, "low_temperature"),
    ({"switch_step": -1}, "switch_step"),
    ({"switch_step": 2.5}, "switch_step"),
])
def test_bad_cooldown(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CooldownSchedule(**kwargs)


# ------------------------------------------------------------------------------------------------------- counts


def test_counts_cap_and_upsample_by_hand():
    # shares 0.7 / 0.3 of sources with 100 and 10 rows
    # cap: N = floor(min(100/0.7, 10/0.3)) = 33; 23.1 -> 23, 9.9 -> 10 (largest remainder)
    assert mixture_counts([100, 10], [0.7, 0.3], "cap") == [23, 10]
    # N = floor(min(100/0.6, 11/0.4)) = floor(27.5) = 27 (rounding up would need 11.2 rows of an 11-row source)
    assert mixture_counts([100, 11], [0.6, 0.4], "cap") == [16, 11]
    # upsample: N = ceil(max(100/0.7, 10/0.3)) = 143; 100.1 -> 100, 42.9 -> 43
    assert mixture_counts([100, 10], [0.7, 0.3], "upsample") == [100, 43]
    # weights are normalised; zero weight drops a source
    assert mixture_counts([100, 10, 5], [7, 3, 0], "cap") == [23, 10, 0]
    assert mixture_counts([100, 10], [0.5, 0.5], "upsample", total_size=11) == [6, 5]


def test_counts_errors():
    with pytest.raises(ValueError, match="at most 20 rows.*upsample"):
        mixture_counts([100, 10], [0.5, 0.5], "cap", total_size=21)
    with pytest.raises(ValueError, match="valid: cap, upsample"):
        mixture_counts([100, 10], [0.5, 0.5], "oversample")
    with pytest.raises(ValueError, match="empty"):
        mixture_counts([100, 0], [0.5, 0.5], "upsample")
    with pytest.raises(ValueError, match="non-negative"):
        mixture_counts([100, 10], [1.5, -0.5], "cap")


def test_upsampled_rows_repeat_evenly():
    import numpy as np

    indices = mixture_indices(10, 43, np.random.default_rng(0))
    repeats = Counter(indices.tolist())
    assert sorted(repeats) == list(range(10)) and set(repeats.values()) == {4, 5}
    assert sum(v == 5 for v in repeats.values()) == 3  # 43 = 4 * 10 + 3
    subset = mixture_indices(10, 7, np.random.default_rng(0))
    assert len(set(subset.tolist())) == 7


# ----------------------------------------------------------------------------------------------------- datasets


def _source(name, n):
    return Dataset.from_dict({"text": [f"{name}-{i}" for i in range(n)]})


@pytest.mark.parametrize("policy, expected", [
    ("cap", {"big": 14, "small": 6}), ("upsample", {"big": 200, "small": 86}),
])
def test_mixture_realizes_the_shares(policy, expected):
    mixture = build_share_mixture([_source("big", 200), _source("small", 6)], [0.7, 0.3], policy=policy, seed=1,
                                  domains=["big", "small"])
    assert Counter(mixture["domain"]) == expected
    total = sum(expected.values())
    assert realized_shares(mixture)["big"] == pytest.approx(0.7, abs=1 / total)
    texts = Counter(mixture["text"])
    if policy == "cap":
        assert max(texts.values()) == 1  # no row repeated
    else:
        assert all(texts[f"big-{i}"] == 1 for i in range(200))  # every row of the large source exactly once
        assert {texts[f"small-{i}"] for i in range(6)} <= {14, 15}  # 86 = 14 * 6 + 2


def test_mixture_is_seeded_and_shuffled():
    sources = [_source("a", 50), _source("b", 50)]
    first = build_share_mixture(sources, [0.5, 0.5], policy="cap", seed=3, domains=["a", "b"])
    again = build_share_mixture(sources, [0.5, 0.5], policy="cap", seed=3, domains=["a", "b"])
    other = build_share_mixture(sources, [0.5, 0.5], policy="cap", seed=4, domains=["a", "b"])
    assert first["text"] == again["text"] and first["text"] != other["text"]
    assert first["domain"][:50] != ["a"] * 50  # interleaved, not one block per source


def test_mixture_rejects_mismatched_columns():
    with pytest.raises(ValueError, match="columns"):
        build_share_mixture([_source("a", 5), Dataset.from_dict({"other": ["x"] * 5})], [1, 1], policy="cap", seed=0)


# ----------------------------------------------------------------------------------------------- recipe loading


def _mixture_args(tmp_path, **mixture):
    from alignment.data import load_task_suite

    counting = tmp_path / "counting.jsonl"
    load_task_suite("train", "preference", domains=["counting"], limit_per_domain=40).to_json(counting)
    section = {
        "datasets": [
            {"path": "task-suite", "domains": ["addition"], "weight": 0.25},
            {"path": str(counting), "domain": "counting_file", "weight": 0.75},
        ],
        "policy": "upsample",
        "seed": 0,
    }
    section.update(mixture)
    return AlignmentScriptArguments(share_mixture=json.dumps(section))


def test_recipe_mixture_of_task_suite_and_local_file(tmp_path):
    args = _mixture_args(tmp_path)
    assert isinstance(args.share_mixture, ShareMixtureConfig)
    data = load_recipe_datasets(args, fmt="preference")
    # upsample: N = ceil(max(300 / 0.25, 40 / 0.75)) = 1200 -> 300 addition rows, 900 file rows (each 22-23 times)
    assert Counter(data["train"]["domain"]) == {"addition": 300, "counting_file": 900}
    # held-out: the task suite's whole test split for its domain; the file has no test split
    assert Counter(data["test"]["domain"]) == {"addition": 50}
    assert set(data["train"].column_names) == {"prompt", "chosen", "rejected", "domain", "answer"}


def test_recipe_mixture_with_temperature(tmp_path):
    # T = inf: equal shares whatever the sizes (300 vs 40 rows); cap keeps 40 + 40
    args = _mixture_args(tmp_path, datasets=[
        {"path": "task-suite", "domains": ["addition"]},
        {"path": str(tmp_path / "counting.jsonl"), "domain": "counting_file"},
    ], temperature=float("inf"), policy="cap")
    data = load_recipe_datasets(args, fmt="preference")
    assert Counter(data["train"]["domain"]) == {"addition": 40, "counting_file": 40}


@pytest.mark.parametrize("section, message", [
    ({"datasets": [{"path": "a", "weight": 1.0}], "policy": "sometimes"}, "valid: cap, upsample"),
    ({"datasets": [{"path": "a", "weight": 1.0}, {"path": "b"}]}, "missing for \\['b'\\]"),
    ({"datasets": [{"path": "a", "weight": 1.0}], "temperature": 2.0}, "either `temperature`"),
    ({"datasets": [{"path": "a", "weight": -1.0}]}, "share >= 0"),
    ({"datasets": []}, "at least one dataset"),
    ({"datasets": [{"path": "a", "wieght": 1.0}]}, "wieght"),
])
def test_bad_mixture_sections(section, message):
    with pytest.raises((ValueError, TypeError), match=message):
        AlignmentScriptArguments(share_mixture=section)


def test_mixture_excludes_other_data_fields(tmp_path):
    args = _mixture_args(tmp_path)
    args.dataset_name = "task-suite"
    with pytest.raises(ValueError, match="keep one of them"):
        load_recipe_datasets(args)
    args = _mixture_args(tmp_path)
    args.task_domains = ["addition"]
    with pytest.raises(ValueError, match="`domains:`"):
        load_recipe_datasets(args)


def test_recipe_yaml_section_parses_with_the_trl_parser(tmp_path):
    from trl import DatasetMixtureConfig, ModelConfig

    from alignment.configs import PreferenceConfig
    from alignment.commands.script_utils import parse_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model_name_or_path: tiny-random-llama\noutput_dir: {tmp_path / 'out'}\n"
        "share_mixture:\n"
        "  datasets:\n"
        "    - {path: task-suite, domains: [addition], weight: 0.6}\n"
        "    - {path: task-suite, domains: [counting], weight: 0.4}\n"
        "  policy: upsample\n"
        "  seed: 3\n"
    )
    script_args, _, _, mixture_args, _ = parse_recipe(
        (AlignmentScriptArguments, PreferenceConfig, ModelConfig, DatasetMixtureConfig), ["--config", str(recipe)]
    )
    data = load_recipe_datasets(script_args, mixture_args)
    # upsample: N = ceil(max(300 / 0.6, 300 / 0.4)) = 750 -> 450 + 300
    assert Counter(data["train"]["domain"]) == {"addition": 450, "counting": 300}
