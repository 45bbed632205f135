"""On-policy pair generation: pairing rules by hand, TRL-style reward calls, and the sampler's shapes."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.pair_generation import build_pairs, pair_indices, sample_completions, score_completions


def test_best_vs_worst_takes_the_first_best_and_the_first_worst():
    assert pair_indices([0.0, 1.0, 0.5, 1.0, 0.0]) == [(1, 0)]
    assert pair_indices([0.2, 0.2, 0.2]) == []  # no preference, no pair
    assert pair_indices([math.nan, 1.0, 0.0]) == [(1, 2)]  # an unscored completion is never paired
    assert pair_indices([1.0, 0.9], min_margin=0.2) == []  # gap 0.1 below the minimum


def test_pass_fail_pairs_every_passing_with_every_failing_completion():
    scores = [1.0, 0.0, 1.0, 0.0, 0.4]
    assert pair_indices(scores, strategy="pass_fail") == [(0, 1), (0, 3), (0, 4), (2, 1), (2, 3), (2, 4)]
    assert pair_indices(scores, strategy="pass_fail", max_pairs_per_prompt=2) == [(0, 1), (0, 3)]
    assert pair_indices(scores, strategy="pass_fail", threshold=0.3) == [(0, 1), (0, 3), (2, 1), (2, 3), (4, 1),
                                                                         (4, 3)]
    with pytest.raises(ValueError, match="best_vs_worst, pass_fail"):
        pair_indices(scores, strategy="best")


def test_pairs_carry_margin_scores_columns_and_the_prompt_format():
    rows = [{"prompt": "What is 2 + 2?", "answer": "4"},
            {"prompt": [{"role": "user", "content": "What is 3 + 3?"}], "answer": "6"},
            {"prompt": "What is 1 + 1?", "answer": "2"}]
    completions = [["4", "5"], ["7", "6"], ["3", "3"]]
    scores = [[1.0, 0.25], [0.0, 1.0], [0.0, 0.0]]
    pairs, counts = build_pairs(rows, completions, scores)
    assert counts == {"prompts": 3, "pairs": 2, "prompts_without_pair": 1}
    assert pairs[0] == {"prompt": "What is 2 + 2?", "answer": "4", "chosen": "4", "rejected": "5",
                        "score_chosen": 1.0, "score_rejected": 0.25, "margin": 0.75}
    assert pairs[1]["chosen"] == [{"role": "assistant", "content": "6"}]  # conversational prompt, conversational pair
    assert pairs[1]["rejected"] == [{"role": "assistant", "content": "7"}] and pairs[1]["margin"] == 1.0


def test_rewards_are_called_as_trl_calls_them_and_weighted():
    seen = {}

    def exact(prompts, completions, answer, **kwargs):
        seen.update(prompts=prompts, completions=completions, answer=answer)
        return [float(c == a) for c, a in zip(completions, answer)]

    def shortness(prompts, completions, **kwargs):
        return [None if c == "skip" else -len(c) for c in completions]  # None: not applicable (TRL's convention)

    scores = score_completions([exact, shortness], ["p1", "p2"], [["4", "44"], ["skip", "6"]],
                               {"answer": ["4", "6"]}, weights=[2.0, 0.5])
    assert seen["prompts"] == ["p1", "p1", "p2", "p2"] and seen["answer"] == ["4", "4", "6", "6"]
    assert scores == [[2.0 - 0.5, -1.0], [0.0, 2.0 - 0.5]]  # "skip": exact scores 0, shortness does not apply
    with pytest.raises(ValueError, match="returned nan"):
        score_completions([lambda prompts, completions, **kw: [math.nan] * len(completions)], ["p"], [["a", "b"]], {})
    with pytest.raises(ValueError, match="returned 1 values for 2"):
        score_completions([lambda prompts, completions, **kw: [0.0]], ["p"], [["a", "b"]], {})


def test_sampling_gives_k_seeded_completions_per_prompt(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = ["What is 2 + 2?", [{"role": "user", "content": "What is 3 + 3?"}], "What is 4 + 4?"]
    first = sample_completions(model, tokenizer, prompts, num_samples=3, max_new_tokens=6, batch_size=2, seed=0)
    again = sample_completions(model, tokenizer, prompts, num_samples=3, max_new_tokens=6, batch_size=2, seed=0)
    assert [len(group) for group in first] == [3, 3, 3] and first == again
    assert len({text for group in first for text in group}) > 3  # sampled, not greedy copies
    assert tokenizer.padding_side == AutoTokenizer.from_pretrained(tiny_model_dir).padding_side  # restored
    with pytest.raises(ValueError, match="at least 2"):
        sample_completions(model, tokenizer, prompts, num_samples=1)
    assert torch.is_grad_enabled()  # the no-grad decorator does not leak


def test_generate_pairs_end_to_end_with_a_file_reward_then_dpo(tiny_model_dir, tmp_path, monkeypatch):
    """prompts + a user's verifier in a file -> pairs with margins and the held-out prompts -> a DPO run on them."""
    import json
    from pathlib import Path

    from alignment.commands import cli
    from alignment.commands.generate_cli import generate_main

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)  # the file reward is given relative to the working directory
    (tmp_path / "verifier.py").write_text(
        "def shorter_is_better(prompts, completions, answer, **kwargs):\n"
        "    return [-float(len(c)) + 100.0 * (c.strip() == a) for c, a in zip(completions, answer)]\n")
    out = tmp_path / "pairs"
    summary = generate_main(["--model_name_or_path", tiny_model_dir, "--dataset_name",
                             str(root / "examples/data/prompts-standard"), "--output_dir", str(out),
                             "--num_samples", "3", "--max_new_tokens", "6", "--batch_size", "4",
                             "--reward_funcs", "./verifier.py:shorter_is_better"])
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert summary["pairs"] == len(rows) > 0 and summary["prompts"] == 8
    for row in rows:  # each pair is the verifier's best vs worst of its prompt, with the gap as margin
        assert row["margin"] == pytest.approx(row["score_chosen"] - row["score_rejected"]) and row["margin"] > 0
        assert row["score_chosen"] == pytest.approx(-len(row["chosen"]) + 100.0 * (row["chosen"].strip() == row["answer"]))
    held_out = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in held_out] == [json.loads(line)["prompt"] for line in
                                               (root / "examples/data/prompts-standard/test.jsonl").read_text().splitlines()]
    recipe = root / "recipes/tiny/dpo.yaml"
    import yaml

    tiny = {k: v for k, v in yaml.safe_load(recipe.read_text()).items()
            if k not in ("dataset_name", "task_domains", "eval_limit_per_domain", "train_limit_per_domain")}
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(tiny))
    trainer, results = cli.dpo_main(["--config", str(tmp_path / "dpo.yaml"), "--model_name_or_path", tiny_model_dir,
                                     "--dataset_name", str(out), "--output_dir", str(tmp_path / "dpo"),
                                     "--max_steps", "1", "--save_strategy", "no"])
    assert trainer.state.global_step == 1
    assert results["after"]["count"]["all"] == 4  # the held-out prompts were answered, not trained on


def test_vllm_sampling_is_refused_before_anything_loads_without_vllm_or_cuda():
    from alignment.commands.generate_cli import PairGenerationArguments

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: the refusal depends on vLLM alone there")
    with pytest.raises(ValueError, match=r"`use_vllm: true` needs vLLM .* CUDA is not available"):
        PairGenerationArguments(dataset_name="task-suite", use_vllm=True)
