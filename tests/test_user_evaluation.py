"""Held-out evaluation on a user's own data: standard (string) prompts, a start-up check, and no lost runs.

The task suite's prompts are conversational; most downloaded prompt sets (GSM8K-style `prompt` + `answer`) are plain
strings, which the evaluation used to pass to `apply_chat_template` and crash after training, before the card and push.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignment.commands import cli

try:
    from tests.fake_hub import fake_hub  # noqa: F401 - fixture
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fake_hub import fake_hub  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _user_prompt_data(directory: Path, test_rows: list[dict] | None = None) -> Path:
    """A local directory with `train.jsonl` / `test.jsonl`: standard string prompts and an `answer` column."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": f"What is {a} + {b}? Reply with just the number.", "answer": str(a + b)}
            for a in range(6) for b in range(3)]
    _write_jsonl(directory / "train.jsonl", rows[:12])
    _write_jsonl(directory / "test.jsonl", rows[12:] if test_rows is None else test_rows)
    return directory


def _user_grpo_recipe(tmp_path: Path) -> Path:
    """The tiny GRPO recipe without its task-suite keys, as a user pointing it at their own data would write it."""
    recipe = yaml.safe_load((ROOT / "recipes/tiny/grpo.yaml").read_text())
    for key in ("dataset_name", "task_domains", "train_limit_per_domain", "eval_limit_per_domain"):
        recipe.pop(key)
    path = tmp_path / "grpo-user.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _argv(tmp_path, model_dir, data_dir, *extra):
    return ["--config", str(_user_grpo_recipe(tmp_path)), "--model_name_or_path", model_dir,
            "--dataset_name", str(data_dir), "--output_dir", str(tmp_path / "out"), "--max_steps", "2", *extra]


def test_grpo_evaluates_standard_string_prompts_after_training(tiny_model_dir, tmp_path):
    data = _user_prompt_data(tmp_path / "data")
    trainer, results = cli.grpo_main(_argv(tmp_path, tiny_model_dir, data, "--eval_before_training", "true"))
    for when in ("before", "after"):
        assert results[when]["count"]["all"] == 6  # every held-out row was generated for and scored
    sample = results["after"]["samples"][0]
    assert sample["prompt"] == "What is 4 + 0? Reply with just the number." and sample["answer"] == "4"
    written = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert written["after"]["count"]["all"] == 6 and "evaluation_errors" not in written


def test_standard_prompts_are_tokenized_as_trl_does(tiny_model_dir):
    """A string prompt is the model's input as it is (no chat template), with the tokenizer's special tokens."""
    from transformers import AutoTokenizer

    from alignment.evaluation import prompt_texts

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert prompt_texts(tokenizer, ["What is 2 + 2?"]) == ["What is 2 + 2?"]
    conversational = prompt_texts(tokenizer, [[{"role": "user", "content": "What is 2 + 2?"}]])[0]
    assert conversational == tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}],
                                                           add_generation_prompt=True, tokenize=False)
    assert conversational != "What is 2 + 2?"


def test_unreadable_evaluation_data_fails_before_training(tiny_model_dir, tmp_path):
    # ShareGPT-style turns ({from, value}) are not TRL's conversational format: no chat template applies to them.
    data = tmp_path / "data"
    data.mkdir()
    sharegpt = [{"prompt": [{"from": "human", "value": f"What is {a} + 1?"}], "answer": str(a + 1)} for a in range(8)]
    _write_jsonl(data / "train.jsonl", sharegpt[:6])
    _write_jsonl(data / "test.jsonl", sharegpt[6:])
    with pytest.raises(ValueError, match="first test example"):
        cli.grpo_main(_argv(tmp_path, tiny_model_dir, data))
    assert not (tmp_path / "out" / "model.safetensors").exists()  # nothing was trained


def test_an_evaluation_failure_after_training_still_saves_cards_and_pushes(fake_hub, tiny_model_dir, tmp_path):
    data = _user_prompt_data(tmp_path / "data")
    out = tmp_path / "out"
    argv = _argv(tmp_path, tiny_model_dir, data, "--push_to_hub", "true", "--hub_model_id", "fake-user/eval-fails")
    # The evaluation breaks after training (here: by hand, in the child process); everything else must still happen.
    program = ("import sys\n"
               "import alignment.commands.cli as cli\n"
               "def broken(*args, **kwargs):\n"
               "    raise MemoryError('out of memory while generating')\n"
               "cli.evaluate_trained_model = broken\n"
               f"cli.grpo_main({argv!r})\n")
    env = {**os.environ, **fake_hub.client_env(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode != 0  # the failure is reported ...
    assert "EvaluationFailed" in run.stderr and "out of memory while generating" in run.stderr
    assert "Pushed" in run.stdout  # ... after the push
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()
    written = json.loads((out / "eval_results.json").read_text())
    assert written["evaluation_errors"] == {"after": "MemoryError: out of memory while generating"}
    assert fake_hub.read_file("fake-user/eval-fails", "model.safetensors") == (out / "model.safetensors").read_bytes()
    assert fake_hub.read_file("fake-user/eval-fails", "README.md").decode() == (out / "README.md").read_text()


# ------------------------------------------------------------------------------- evaluation scored by any reward
EXAMPLES = ROOT / "examples" / "data"


def _tiny_recipe(tmp_path: Path, name: str) -> Path:
    recipe = {k: v for k, v in yaml.safe_load((ROOT / f"recipes/tiny/{name}.yaml").read_text()).items()
              if k not in ("dataset_name", "task_domains", "train_limit_per_domain", "eval_limit_per_domain",
                           "task_label_noise")}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_solution_column_is_scored_by_math_verify_by_default(tiny_model_dir, tmp_path):
    """Conversational prompts with a `solution` (TRL's / open-r1's gold column): math-verify scores the evaluation."""
    from alignment.evaluation import evaluate_answers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from datasets import Dataset

    rows = [json.loads(line) for line in (EXAMPLES / "prompts-conversational/test.jsonl").read_text().splitlines()]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    result = evaluate_answers(model, tokenizer, Dataset.from_list(rows), max_new_tokens=4)
    assert list(result["rewards"]) == ["math_verify_reward"] and result["count"]["all"] == len(rows)
    assert result["accuracy"] == result["rewards"]["math_verify_reward"]
    assert all("math_verify_reward" in s["scores"] and "solution" in s for s in result["samples"])


def test_evaluation_rewards_from_a_file_and_a_reward_model_per_domain(tiny_model_dir, tmp_path, monkeypatch):
    """`eval_reward_funcs` takes the forms GRPO takes; each reward is averaged per domain and recorded by name."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.chdir(tmp_path)
    (tmp_path / "length_score.py").write_text(
        "def length_score(prompts, completions, **kwargs):\n"
        "    return [float(len(c)) for c in completions]\n")
    rm_dir = tmp_path / "tiny-rm"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    reward_model.config.pad_token_id = tokenizer.pad_token_id
    reward_model.save_pretrained(rm_dir)
    tokenizer.save_pretrained(rm_dir)
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"prompt": f"What is {a} + 1?", "answer": str(a + 1), "domain": "small" if a < 3 else "large"}
            for a in range(6)]
    _write_jsonl(data / "train.jsonl", rows)
    _write_jsonl(data / "test.jsonl", rows)
    trainer, results = cli.grpo_main(
        ["--config", str(_tiny_recipe(tmp_path, "grpo")), "--model_name_or_path", tiny_model_dir,
         "--dataset_name", str(data), "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
         "--eval_reward_funcs", "./length_score.py:length_score", str(rm_dir)])
    after = results["after"]
    assert list(after["rewards"]) == ["length_score", "tiny-rm"]
    assert after["accuracy"] == after["rewards"]["length_score"]  # the first reward is reported as accuracy
    samples = [s for s in after["samples"] if s["domain"] == "small"]
    assert samples[0]["scores"]["length_score"] == len(samples[0]["completion"])
    assert set(after["rewards"]["tiny-rm"]) == {"small", "large", "all"}
    assert all(isinstance(v, float) for v in after["rewards"]["tiny-rm"].values())
    card = (tmp_path / "out" / "README.md").read_text()
    assert "tiny-rm/all" in card  # every reward reaches the card's metrics


def test_a_bad_evaluation_reward_fails_before_training(tiny_model_dir, tmp_path):
    data = _user_prompt_data(tmp_path / "data")
    with pytest.raises(ValueError, match="Cannot resolve reward 'acuracy_reward'"):
        cli.grpo_main(_argv(tmp_path, tiny_model_dir, data, "--eval_reward_funcs", "acuracy_reward"))
    assert not (tmp_path / "out" / "model.safetensors").exists()
