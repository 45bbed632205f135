"""Every data layout users download, for every trainer: a one-step tiny run on each example under examples/data/.

The examples are the public layouts in miniature: TRL's standard, conversational and implicit-prompt preference
formats, UltraFeedback-binarized (string prompt + whole conversations), UltraChat-style SFT (`prompt` + `messages`),
TRL's messages and prompt-completion SFT formats, and prompt-only data with string or conversational prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict

from alignment.commands import cli
from alignment.data_layouts import normalize_split
from alignment.commands.reward_cli import reward_main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "data"
TASK_SUITE_KEYS = ("dataset_name", "task_domains", "train_limit_per_domain", "eval_limit_per_domain", "task_label_noise")


def _recipe(tmp_path: Path, name: str) -> Path:
    """A tiny recipe without its task-suite keys: how a user points a shipped recipe at their own data."""
    recipe = {k: v for k, v in yaml.safe_load((ROOT / f"recipes/tiny/{name}.yaml").read_text()).items()
              if k not in TASK_SUITE_KEYS}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


MAINS = {"dpo": cli.dpo_main, "sft": cli.sft_main, "grpo": cli.grpo_main, "reward": reward_main}
CASES = [
    ("dpo", "preference-standard", ()),
    ("dpo", "preference-conversational", ()),
    ("dpo", "preference-implicit-prompt", ()),
    ("dpo", "ultrafeedback-binarized", ()),
    ("reward", "ultrafeedback-binarized", ()),
    ("reward", "preference-conversational", ()),
    ("sft", "sft-messages", ()),
    ("sft", "sft-prompt-completion", ()),
    ("sft", "ultrachat", ()),
    ("grpo", "prompts-standard", ()),
]


@pytest.mark.parametrize("trainer,layout,extra", CASES, ids=[f"{t}-{layout}" for t, layout, _ in CASES])
def test_one_step_on_every_layout(tiny_model_dir, tmp_path, trainer, layout, extra):
    out = tmp_path / "out"
    argv = ["--config", str(_recipe(tmp_path, trainer)), "--model_name_or_path", tiny_model_dir,
            "--dataset_name", str(EXAMPLES / layout), "--output_dir", str(out), "--max_steps", "1",
            "--save_strategy", "no", *extra]
    result = MAINS[trainer](argv)
    assert (out / "model.safetensors").exists() or (out / "adapter_model.safetensors").exists()
    assert json.loads((out / "eval_results.json").read_text())  # evaluated and written, not crashed
    if trainer != "reward":
        trained, _ = result
        assert trained.state.global_step == 1


def test_ultrafeedback_prompt_becomes_the_shared_conversation_prefix():
    row = json.loads((EXAMPLES / "ultrafeedback-binarized" / "train_prefs.jsonl").read_text().splitlines()[0])
    normalized = normalize_split(Dataset.from_list([row]), "preference")[0]
    assert normalized["prompt"] == [{"role": "user", "content": row["prompt"]}]
    assert normalized["chosen"] == row["chosen"][1:] and normalized["rejected"] == row["rejected"][1:]
    assert normalized["prompt_id"] == row["prompt_id"]  # other columns are kept


def test_ultrachat_trains_on_messages_and_drops_the_repeated_prompt():
    row = json.loads((EXAMPLES / "ultrachat" / "train_sft.jsonl").read_text().splitlines()[0])
    normalized = normalize_split(Dataset.from_list([row]), "sft")
    assert "prompt" not in normalized.column_names
    assert normalized[0]["messages"] == row["messages"]


@pytest.mark.parametrize("fmt,layout", [("preference", "preference-standard"), ("preference", "preference-conversational"),
                                        ("sft", "sft-prompt-completion"), ("sft", "sft-messages"),
                                        ("prompt_only", "prompts-standard")])
def test_layouts_trl_already_reads_pass_through_unchanged(fmt, layout):
    rows = [json.loads(line) for line in (EXAMPLES / layout / "train.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list(rows)
    assert normalize_split(dataset, fmt) is dataset
