"""The MADPO pipeline: label-noise tiers in the task suite, reward model -> margin annotation -> `loss_type: madpo`."""

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from alignment.configs import AlignmentScriptArguments
from alignment.data import load_task_suite
from alignment.data_loading import load_recipe_datasets

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ["addition", "comparison"]


# ------------------------------------------------------------------------------------------------ label-noise tiers


def flip_counts(dataset):
    return Counter(d for d, f in zip(dataset["domain"], dataset["label_flipped"]) if f)


@pytest.mark.parametrize("noise, limit, expected", [(0.25, 32, 8), (0.1, None, 30), (0.33, 10, 3), (1.0, 5, 5)])
def test_noise_flips_exactly_round_noise_times_n_rows_per_domain(noise, limit, expected):
    noisy = load_task_suite("train", "preference", DOMAINS, limit_per_domain=limit, label_noise=noise)
    assert flip_counts(noisy) == {d: expected for d in DOMAINS}


def test_noise_is_deterministic_and_seeded_per_domain():
    a = load_task_suite("train", "preference", DOMAINS, limit_per_domain=40, label_noise=0.3)
    b = load_task_suite("train", "preference", DOMAINS, limit_per_domain=40, label_noise=0.3)
    assert a.to_list() == b.to_list()
    other_seed = load_task_suite("train", "preference", DOMAINS, limit_per_domain=40, label_noise=0.3, noise_seed=1)
    assert flip_counts(other_seed) == flip_counts(a)
    assert other_seed["label_flipped"] != a["label_flipped"]
    # One domain's flips do not depend on which other domains are loaded.
    alone = load_task_suite("train", "preference", ["comparison"], limit_per_domain=40, label_noise=0.3)
    together = [f for d, f in zip(a["domain"], a["label_flipped"]) if d == "comparison"]
    assert alone["label_flipped"] == together


def test_flipped_rows_swap_chosen_and_rejected_and_nothing_else():
    clean = load_task_suite("train", "preference", DOMAINS, limit_per_domain=20).to_list()
    noisy = load_task_suite("train", "preference", DOMAINS, limit_per_domain=20, label_noise=0.4).to_list()
    assert len(clean) == len(noisy)
    for c, n in zip(clean, noisy):
        assert n["prompt"] == c["prompt"] and n["answer"] == c["answer"] and n["domain"] == c["domain"]
        if n["label_flipped"]:
            assert (n["chosen"], n["rejected"]) == (c["rejected"], c["chosen"])
            assert n["chosen"][0]["content"] != n["answer"]
        else:
            assert (n["chosen"], n["rejected"]) == (c["chosen"], c["rejected"])


def test_zero_noise_gives_the_original_rows():
    clean = load_task_suite("train", "preference", DOMAINS, limit_per_domain=20)
    zero = load_task_suite("train", "preference", DOMAINS, limit_per_domain=20, label_noise=0.0)
    assert zero.column_names == clean.column_names and "label_flipped" not in zero.column_names
    assert zero.to_list() == clean.to_list()


def test_recipe_noise_flips_train_split_only():
    args = AlignmentScriptArguments(dataset_name="task-suite", task_domains=DOMAINS, train_limit_per_domain=20,
                                    eval_limit_per_domain=10, task_label_noise=0.5)
    data = load_recipe_datasets(args, fmt="preference")
    assert flip_counts(data["train"]) == {"addition": 10, "comparison": 10}
    clean_test = load_task_suite("test", "preference", DOMAINS, limit_per_domain=10)
    assert data["test"].to_list() == clean_test.to_list()
    assert "label_flipped" not in data["test"].column_names


def test_invalid_noise_is_rejected():
    with pytest.raises(ValueError, match="label_noise"):
        AlignmentScriptArguments(dataset_name="task-suite", task_label_noise=1.5)
    with pytest.raises(ValueError, match="label_noise"):
        load_task_suite("train", "preference", DOMAINS, label_noise=-0.1)
    with pytest.raises(ValueError, match="preference"):
        load_task_suite("train", "sft", DOMAINS, label_noise=0.2)
    with pytest.raises(ValueError, match="task_label_noise"):
        load_recipe_datasets(AlignmentScriptArguments(dataset_name="some/hub-dataset", task_label_noise=0.2))


# ------------------------------------------------------------------------------ reward -> annotate -> madpo, end to end


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir, tmp_path_factory):
    from alignment.commands import reward_cli

    root = tmp_path_factory.mktemp("madpo-pipeline")
    rm_dir, margins_dir = root / "rm", root / "margins"
    trainer, results = reward_cli.reward_main(
        ["--config", str(ROOT / "recipes/tiny/reward.yaml"), "--model_name_or_path", tiny_model_dir,
         "--output_dir", str(rm_dir)]
    )
    summary = reward_cli.annotate_main(
        ["--reward_model", str(rm_dir), "--task_domains", *DOMAINS, "--train_limit_per_domain", "32",
         "--test_limit_per_domain", "4", "--task_label_noise", "0.125", "--output_dir", str(margins_dir),
         "--batch_size", "5", "--no_progress"]
    )
    return {"rm": rm_dir, "margins": margins_dir, "reward_trainer": trainer, "reward_results": results,
            "summary": summary}


def test_reward_run_saves_a_sequence_classifier_and_pairwise_accuracy(pipeline):
    from transformers import AutoModelForSequenceClassification

    rm_dir = pipeline["rm"]
    assert pipeline["reward_trainer"].state.global_step == 4
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    saved = json.loads((rm_dir / "eval_results.json").read_text())
    accuracy = saved["preference"]["eval_pairwise_accuracy"]
    assert 0.0 <= accuracy <= 1.0 and saved["reward"]["count"]["all"] == 8
    # Exact pair count agrees with TRL's own evaluation (no pair was longer than max_length).
    assert accuracy == pytest.approx(saved["preference"]["eval_accuracy"])
    assert "reward" in (rm_dir / "README.md").read_text()


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_annotated_margins_are_finite_and_match_an_independent_score(pipeline):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    train = read_jsonl(pipeline["margins"] / "train.jsonl")
    test = read_jsonl(pipeline["margins"] / "test.jsonl")
    assert len(train) == 64 and len(test) == 8
    assert all(isinstance(r["margin"], float) and math.isfinite(r["margin"]) for r in train + test)
    assert sum(r["label_flipped"] for r in train) == 8 and "label_flipped" not in test[0]

    model = AutoModelForSequenceClassification.from_pretrained(pipeline["rm"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(pipeline["rm"])

    def score(messages):
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0, 0].item()

    flipped = next(r for r in train if r["label_flipped"])
    for row in (train[0], flipped, test[-1]):
        expected = score(row["prompt"] + row["chosen"]) - score(row["prompt"] + row["rejected"])
        assert row["margin"] == pytest.approx(expected, abs=1e-5)
    assert pipeline["summary"]["splits"]["train"]["flipped_count"] == 8


def test_madpo_trains_on_the_annotated_pairs(pipeline, tiny_model_dir, tmp_path):
    from alignment.commands import cli

    out = tmp_path / "madpo"
    trainer, results = cli.dpo_main(
        ["--config", str(ROOT / "recipes/tiny/madpo.yaml"), "--model_name_or_path", tiny_model_dir,
         "--dataset_name", str(pipeline["margins"]), "--output_dir", str(out), "--eval_after_training", "false"]
    )
    assert trainer.state.global_step == 4
    weights = [h["madpo/weight"] for h in trainer.state.log_history if "madpo/weight" in h]
    assert len(weights) == 4 and all(math.isfinite(w) and w > 0 for w in weights)
    assert "eval_loss" in results["preference"]


def test_annotate_without_chosen_names_the_column(pipeline, tmp_path):
    from alignment.commands import reward_cli

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text(json.dumps({"prompt": "2 + 2 =", "rejected": " 5"}) + "\n")
    with pytest.raises(ValueError, match="`chosen`"):
        reward_cli.annotate_main(["--reward_model", str(pipeline["rm"]), "--dataset_name", str(bad),
                                  "--output_dir", str(tmp_path / "out")])


def test_annotate_reads_a_single_file(pipeline, tmp_path):
    from alignment.commands import reward_cli

    pairs = ROOT / "examples/data/preference-standard/train.jsonl"
    reward_cli.annotate_main(["--reward_model", str(pipeline["rm"]), "--dataset_name", str(pairs),
                              "--output_dir", str(tmp_path / "out"), "--no_progress"])
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == len(pairs.read_text().splitlines()) and all(isinstance(r["margin"], float) for r in rows)


def test_annotate_rejects_a_model_that_is_not_a_reward_model(tiny_model_dir):
    from alignment.modeling.reward_model import load_reward_model

    with pytest.raises(ValueError, match="num_labels"):
        load_reward_model(tiny_model_dir)


def test_smollm2_reward_recipe_parses():
    from trl import DatasetMixtureConfig, ModelConfig, RewardConfig

    from alignment.commands.script_utils import parse_recipe

    script_args, training_args, model_args, _, _ = parse_recipe(
        (AlignmentScriptArguments, RewardConfig, ModelConfig, DatasetMixtureConfig),
        ["--config", str(ROOT / "recipes/smollm2-135m/reward.yaml")],
    )
    assert isinstance(training_args, RewardConfig) and script_args.task_label_noise == 0.2
    assert model_args.model_name_or_path == "smollm2-135m-instruct"
