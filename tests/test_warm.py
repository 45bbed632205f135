"""WARM (arXiv 2401.12187): the weight average of reward models, its refusals, `alignment-warm`, and members that
share their init (same `seed`, different `data_seed`) trained by `alignment-reward`."""

import json
from pathlib import Path

import pytest
import torch

from alignment.reward_merge import (
    INIT_HASH_KEY,
    average_state_dicts,
    ensemble_scores,
    init_fingerprint,
    merge_reward_models,
    normalized_weights,
)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ the formula, hand-computed


A = {"w": torch.tensor([1.0, 2.0]), "step": torch.tensor([7])}
B = {"w": torch.tensor([3.0, 6.0]), "step": torch.tensor([7])}
C = {"w": torch.tensor([5.0, 1.0]), "step": torch.tensor([7])}


def test_mean_of_two_and_three_known_state_dicts():
    assert average_state_dicts([A, B])["w"].tolist() == [2.0, 4.0]  # (1+3)/2, (2+6)/2
    assert average_state_dicts([A, B, C])["w"].tolist() == [3.0, 3.0]  # (1+3+5)/3, (2+6+1)/3
    # a generator (how checkpoints are streamed) gives the same mean; the integer buffer is copied, not averaged
    merged = average_state_dicts(iter([A, B, C]))
    assert merged["w"].tolist() == [3.0, 3.0] and merged["step"].tolist() == [7]


def test_weighted_mean_normalises_the_weights():
    # 0.25 * [1, 2] + 0.75 * [3, 6] = [2.5, 5.0]; weights (2, 6) mean the same mixture
    assert average_state_dicts([A, B], weights=[0.25, 0.75])["w"].tolist() == [2.5, 5.0]
    assert average_state_dicts([A, B], weights=[2, 6])["w"].tolist() == [2.5, 5.0]
    # a zero weight drops that member: the weighted mean of A, B, C with (1, 0, 1) is the mean of A and C
    assert average_state_dicts([A, B, C], weights=[1, 0, 1])["w"].tolist() == [3.0, 1.5]
    assert normalized_weights(None, 4) == [0.25] * 4 and normalized_weights([1, 3], 2) == [0.25, 0.75]


def test_average_is_computed_in_float32_and_saved_in_the_members_dtype():
    # bf16 cannot hold 1 + 2**-9; the float32 sum of (1, 1 + 2**-8) / 2 is exactly that, rounded once when cast back
    members = [{"w": torch.tensor([1.0], dtype=torch.bfloat16)}, {"w": torch.tensor([1.0078125], dtype=torch.bfloat16)}]
    merged = average_state_dicts(members)
    assert merged["w"].dtype == torch.bfloat16
    assert merged["w"].float().item() == torch.tensor([1.00390625]).to(torch.bfloat16).float().item()
    # many members: the float32 accumulator stays exact where an in-dtype running sum in bf16 would drift
    many = [{"w": torch.full((3,), float(i), dtype=torch.bfloat16)} for i in range(1, 12)]
    assert average_state_dicts(many)["w"].float().tolist() == [6.0] * 3


def test_random_state_dicts_match_an_independent_float64_mean():
    gen = torch.Generator().manual_seed(0)
    members = [{"a": torch.randn(4, 5, generator=gen), "b": torch.randn(3, generator=gen)} for _ in range(3)]
    weights = [0.2, 0.5, 0.3]
    merged = average_state_dicts(members, weights=weights)
    for key in ("a", "b"):
        expected = sum(w * m[key].double() for w, m in zip(weights, members))
        torch.testing.assert_close(merged[key].double(), expected, rtol=0, atol=1e-6)


def test_prediction_ensemble_is_the_mean_score():
    assert ensemble_scores([[1.0, -2.0], [3.0, 0.0], [2.0, 5.0]]) == [2.0, 1.0]


@pytest.mark.parametrize("members, weights, match", [
    ([A], None, "at least 2"),
    ([A, B], [1.0], "one weight per checkpoint"),
    ([A, B], [1.0, -1.0], ">= 0"),
    ([A, B], [0.0, 0.0], "sum to 0"),
    ([A, {"w": torch.tensor([1.0, 2.0])}], None, r"Checkpoint #1 .*missing key\(s\) \['step'\]"),
    ([A, {**B, "extra": torch.zeros(1)}], None, r"Checkpoint #1 .*unexpected key\(s\) \['extra'\]"),
    ([A, {**B, "w": torch.zeros(3)}], None, r"Checkpoint #1: key 'w' has shape \(3,\) but #0 has \(2,\)"),
    ([A, {**B, "step": torch.tensor([8])}], None, r"Checkpoint #1: the non-floating tensor 'step' differs"),
])
def test_state_dict_refusals_name_the_member_and_the_key(members, weights, match):
    with pytest.raises(ValueError, match=match):
        average_state_dicts(members, weights=weights)


# ------------------------------------------------------------------------------------- checkpoints on disk


def _reward_model(model_dir, seed=0):
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    set_seed(seed)
    with suppress_seqcls_warning():
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    model.config.pad_token_id = 0
    return model


@pytest.fixture(scope="module")
def members(tiny_model_dir, tmp_path_factory):
    """Three "fine-tuned" reward models from one init: the init plus a different known perturbation each, saved
    with the init's fingerprint as `alignment-reward` records it; and one from another init (another head seed)."""
    from transformers import AutoTokenizer

    from alignment.reward_merge import record_init_fingerprint
    from alignment.testing import perturb_parameters_

    root = tmp_path_factory.mktemp("warm-members")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    paths = []
    for i in range(3):
        model = _reward_model(tiny_model_dir, seed=0)
        record_init_fingerprint(model)
        perturb_parameters_(model, seed=10 + i, scale=0.1)
        paths.append(str(root / f"member-{i}"))
        model.save_pretrained(paths[-1])
        tokenizer.save_pretrained(paths[-1])
    other = _reward_model(tiny_model_dir, seed=1)
    record_init_fingerprint(other)
    other.save_pretrained(root / "other-init")
    tokenizer.save_pretrained(root / "other-init")
    return {"paths": paths, "other": str(root / "other-init"), "root": root, "tiny": tiny_model_dir}


def _params(path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path).state_dict()


def test_alignment_warm_writes_the_average_a_tokenizer_and_a_card(members, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignment.commands import console

    out = tmp_path / "merged"
    assert console.run_step("warm", ["--checkpoints", *members["paths"], "--output_dir", str(out)]) == 0
    merged, states = _params(out), [_params(p) for p in members["paths"]]
    assert set(merged) == set(states[0])
    for key, value in merged.items():
        expected = sum(s[key].double() for s in states) / 3
        torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-6)
        # the members really differ, so a wrong average (e.g. the first member) would fail above
        assert not torch.equal(states[0][key], states[1][key])

    summary = json.loads((out / "warm.json").read_text())
    assert summary["checkpoints"] == members["paths"] and summary["weights"] == pytest.approx([1 / 3] * 3)
    assert summary["init_checked"] and summary[INIT_HASH_KEY] == json.loads(
        (Path(members["paths"][0]) / "config.json").read_text())[INIT_HASH_KEY]
    card = (out / "README.md").read_text()
    assert "WARM" in card and "2401.12187" in card and all(p in card for p in members["paths"])
    assert "reward-model" in card

    # the merged model loads and scores like any reward model
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("2 + 2 = 4", return_tensors="pt")
    with torch.no_grad():
        score = model(**ids).logits
    assert score.shape == (1, 1) and torch.isfinite(score).all()


def test_weighted_merge_on_disk(members, tmp_path):
    out = tmp_path / "weighted"
    merge_reward_models(members["paths"][:2], str(out), weights=[3, 1])
    merged, a, b = _params(out), _params(members["paths"][0]), _params(members["paths"][1])
    for key in merged:
        torch.testing.assert_close(merged[key].double(), 0.75 * a[key].double() + 0.25 * b[key].double(),
                                   rtol=0, atol=1e-6)


def test_refuses_members_from_different_inits_naming_them(members, tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(ValueError, match=r"not fine-tuned from the same initialisation") as error:
        merge_reward_models([members["paths"][0], members["other"]], str(out))
    assert members["other"] in str(error.value) and "data_seed" in str(error.value)
    assert not out.exists()  # refused before writing anything
    merge_reward_models([members["paths"][0], members["other"]], str(out), allow_different_init=True)
    assert not json.loads((out / "warm.json").read_text())["init_checked"]


def test_refuses_a_different_architecture_naming_the_key(members, tmp_path):
    from alignment.testing import save_tiny_model

    wider = _reward_model(save_tiny_model(tmp_path / "wider-base", hidden_size=48), seed=0)
    wider.save_pretrained(tmp_path / "wider")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(members["tiny"]).save_pretrained(tmp_path / "wider")
    out = tmp_path / "refused"
    with pytest.raises(ValueError, match=r"wider: config key 'head_dim' is 12 but .*member-0 has 8"):
        merge_reward_models([members["paths"][0], str(tmp_path / "wider")], str(out))
    assert not out.exists()


def test_refuses_a_different_tokenizer(members, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    odd = tmp_path / "odd-tokenizer"
    shutil.copytree(members["paths"][1], odd)
    tokenizer = AutoTokenizer.from_pretrained(odd)
    tokenizer.chat_template = "{{ messages[0]['content'] }}"
    tokenizer.save_pretrained(odd)
    with pytest.raises(ValueError, match=r"odd-tokenizer: its tokenizer's chat template differs"):
        merge_reward_models([members["paths"][0], str(odd)], str(tmp_path / "out"))


def test_refuses_bad_inputs_before_loading(members, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="at least 2"):
        merge_reward_models(members["paths"][:1], out)
    with pytest.raises(ValueError, match="more than once"):
        merge_reward_models([members["paths"][0], members["paths"][0]], out)
    with pytest.raises(ValueError, match="more than once"):  # the same directory by another spelling
        merge_reward_models([members["paths"][0], members["paths"][0] + "/."], out)
    with pytest.raises(ValueError, match="is one of the checkpoints"):
        merge_reward_models(members["paths"][:2], members["paths"][1], overwrite=True)
    with pytest.raises(ValueError, match="is not a reward model: num_labels=2"):
        from transformers import AutoConfig

        two = tmp_path / "two-labels"
        config = AutoConfig.from_pretrained(members["paths"][1])
        config.num_labels = 2
        import shutil

        shutil.copytree(members["paths"][1], two)
        config.save_pretrained(two)
        merge_reward_models([members["paths"][0], str(two)], out)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="LoRA adapter"):
        merge_reward_models([members["paths"][0], str(adapter)], out)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        merge_reward_models(members["paths"][:2], str(busy))
    assert not Path(out).exists()


# ------------------------------------------------------------- members trained by alignment-reward, same init


def test_init_fingerprint_sees_the_head_seed(tiny_model_dir):
    same = init_fingerprint(_reward_model(tiny_model_dir, seed=3))
    assert same == init_fingerprint(_reward_model(tiny_model_dir, seed=3))
    # transformers draws the new `score` head from the seeded torch RNG: another seed is another init
    assert same != init_fingerprint(_reward_model(tiny_model_dir, seed=4))


def test_members_with_the_same_seed_and_different_data_seed_share_their_init(tiny_model_dir, tmp_path):
    from alignment.commands import reward_cli

    recipe = ["--config", str(ROOT / "recipes/tiny/warm.yaml"), "--model_name_or_path", tiny_model_dir]
    runs = {}
    for name, extra in {"d1": ["--data_seed", "1"], "d2": ["--data_seed", "2"], "s7": ["--seed", "7"]}.items():
        reward_cli.reward_main([*recipe, *extra, "--output_dir", str(tmp_path / name)])
        runs[name] = json.loads((tmp_path / name / "config.json").read_text())[INIT_HASH_KEY]
    assert runs["d1"] == runs["d2"] and runs["d1"] != runs["s7"] and len(runs["d1"]) == 64
    # the data order did change what was learned
    d1, d2 = _params(tmp_path / "d1"), _params(tmp_path / "d2")
    assert any(not torch.equal(d1[k], d2[k]) for k in d1)

    merge_reward_models([str(tmp_path / "d1"), str(tmp_path / "d2")], str(tmp_path / "warm"))
    with pytest.raises(ValueError, match="same initialisation"):
        merge_reward_models([str(tmp_path / "d1"), str(tmp_path / "s7")], str(tmp_path / "refused"))


def test_warm_recipes_keep_seed_fixed_and_set_data_seed():
    import yaml

    for name in ("tiny/warm.yaml", "smollm2-135m/warm.yaml"):
        recipe = yaml.safe_load((ROOT / "recipes" / name).read_text())
        assert recipe["seed"] == 42 and recipe["data_seed"] == 1
