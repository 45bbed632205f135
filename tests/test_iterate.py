"""Iterative on-policy DPO: two rounds of generate -> pairs -> train -> evaluate, and a resume that redoes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alignment.commands.iterate_cli import IterativeArguments, iterate_main

ROOT = Path(__file__).resolve().parents[1]


def _recipe(tmp_path: Path, model_dir: str, **overrides) -> Path:
    (tmp_path / "verifier.py").write_text(
        "def shorter(prompts, completions, answer, **kwargs):\n"
        "    return [-float(len(c)) + 100.0 * (c.strip() == a) for c, a in zip(completions, answer)]\n")
    recipe = {
        "model_name_or_path": model_dir, "output_dir": str(tmp_path / "iter"), "rounds": 2,
        "generate": {"dataset_name": str(ROOT / "examples/data/prompts-standard"), "num_samples": 3,
                     "max_new_tokens": 6, "reward_funcs": [str(tmp_path / "verifier.py") + ":shorter"]},
        "train": {"config": str(ROOT / "recipes/tiny/dpo.yaml"), "max_steps": 1, "save_strategy": "no",
                  "eval_max_new_tokens": 6},
        **overrides,
    }
    path = tmp_path / "iterate.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_two_rounds_each_sample_from_the_model_before_and_resume_redoes_nothing(tiny_model_dir, tmp_path):
    records = iterate_main(["--config", str(_recipe(tmp_path, tiny_model_dir))])
    out = tmp_path / "iter"
    assert [r["round"] for r in records] == [1, 2]
    # Round 2 samples from and trains from round 1's model (on-policy), round 1 from the starting model.
    assert records[0]["sampled_from"] == records[0]["trained_from"] == tiny_model_dir
    assert records[1]["sampled_from"] == records[1]["trained_from"] == str(out / "round-1" / "model")
    assert yaml.safe_load((out / "round-2" / "generate.yaml").read_text())["model_name_or_path"] == str(
        out / "round-1" / "model")
    train = yaml.safe_load((out / "round-2" / "train.yaml").read_text())
    assert train["dataset_name"] == str(out / "round-2" / "pairs") and train["beta"] == 0.1  # from the base recipe
    assert "task_domains" not in train  # the base recipe's task-suite data keys are replaced by the round's pairs
    for r in records:
        assert r["pairs"] > 0 and r["accuracy_after"]["all"] is not None  # trained and evaluated on held-out prompts
    assert records[0]["accuracy_before"] is not None  # M_0's score, measured once
    assert json.loads((out / "iterations.json").read_text()) == records
    assert (out / "plots" / "iterations.png").is_file()  # the rounds as a picture (`alignment.plots`)

    # Interrupted after round 1: round 2's model is gone. The resume neither samples nor trains round 1 again.
    generated = (out / "round-1" / "pairs" / "train.jsonl").stat().st_mtime_ns
    trained = (out / "round-1" / "model" / "model.safetensors").stat().st_mtime_ns
    (out / "round-2" / "model" / "eval_results.json").unlink()
    again = iterate_main(["--config", str(tmp_path / "iterate.yaml")])
    assert (out / "round-1" / "pairs" / "train.jsonl").stat().st_mtime_ns == generated
    assert (out / "round-1" / "model" / "model.safetensors").stat().st_mtime_ns == trained
    assert (out / "round-2" / "model" / "eval_results.json").is_file() and len(again) == 2


def test_base_init_trains_every_round_from_the_start_model(tiny_model_dir, tmp_path):
    records = iterate_main(["--config", str(_recipe(tmp_path, tiny_model_dir, rounds=2, init_from="base"))])
    assert records[1]["trained_from"] == tiny_model_dir
    assert records[1]["sampled_from"] == str(tmp_path / "iter" / "round-1" / "model")  # still on-policy data


@pytest.mark.parametrize("section,key", [("generate", "output_dir"), ("train", "dataset_name"),
                                         ("train", "model_name_or_path")])
def test_paths_the_driver_owns_are_refused_in_the_sections(section, key):
    with pytest.raises(ValueError, match=f"`{section}` sets \\['{key}'\\]"):
        IterativeArguments(**{section: {key: "x"}})


def test_a_resumed_round_whose_sampling_gave_no_pair_says_so(tiny_model_dir, tmp_path):
    # generate_pairs records its counts, then fails, when every answer scored the same; a resume must not train on
    # the empty pairs file but say what to change.
    pairs = tmp_path / "iter" / "round-1" / "pairs"
    pairs.mkdir(parents=True)
    (pairs / "generation.json").write_text(json.dumps({"pairs": 0, "prompts": 8, "prompts_without_pair": 8}))
    (pairs / "train.jsonl").write_text("")
    with pytest.raises(RuntimeError, match="holds no pairs"):
        iterate_main(["--config", str(_recipe(tmp_path, tiny_model_dir))])
