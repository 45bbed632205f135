"""A Hub token given to a run is used for the push and written nowhere; a bad `hub_model_id` stops the run at start.

The end-to-end run is a subprocess against the local fake Hub (tests/fake_hub.py): `huggingface_hub` reads
HF_ENDPOINT at import time, and this test process imported it offline (tests/conftest.py).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    from tests.fake_hub import fake_hub  # noqa: F401 - fixture
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fake_hub import fake_hub  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------------- unit
@pytest.mark.parametrize("key", ["hub_token", "HF_TOKEN", "token", "hubToken", "--hub-token", "client_secret",
                                 "db_password", "Password"])
def test_secret_keys(key):
    from alignment.redaction import is_secret_key

    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["eval_max_new_tokens", "token_weighting", "token_weighting_kwargs", "pad_token",
                                 "eos_token", "include_num_input_tokens_seen", "average_tokens_across_devices",
                                 "hub_model_id", "learning_rate"])
def test_not_secret_keys(key):
    from alignment.redaction import is_secret_key

    # Counts of tokens, token-level loss weighting and tokenizer special tokens are settings a recipe must keep.
    assert not is_secret_key(key)


def test_redact_nested_dicts_and_argument_lists():
    from alignment.redaction import REDACTED, redact

    recipe = {
        "hub_token": "hf_A",
        "learning_rate": 1e-3,
        "eval_max_new_tokens": 8,
        "pad_token": "<|pad|>",
        "token_weighting_kwargs": {"api_token": "hf_B", "alpha": 1.0},
        "callbacks": [{"wandb": {"password": "pw"}}],
        "unset_token": None,
        "cli_overrides": ["--hub_token", "hf_C", "--hub-token=hf_D", "--max_steps", "2", "--secret", "--seed", "1"],
    }
    out = redact(recipe)
    assert out == {
        "hub_token": REDACTED,
        "learning_rate": 1e-3,
        "eval_max_new_tokens": 8,
        "pad_token": "<|pad|>",
        "token_weighting_kwargs": {"api_token": REDACTED, "alpha": 1.0},
        "callbacks": [{"wandb": {"password": REDACTED}}],
        "unset_token": None,
        # `--secret` with no value: the next flag is left alone.
        "cli_overrides": ["--hub_token", REDACTED, f"--hub-token={REDACTED}", "--max_steps", "2", "--secret", "--seed",
                          "1"],
    }
    assert recipe["hub_token"] == "hf_A" and recipe["cli_overrides"][1] == "hf_C"  # the input is not modified


def test_parse_recipe_redacts_a_token_from_the_recipe_file_and_the_command_line(tmp_path):
    from trl import DatasetMixtureConfig, ModelConfig

    from alignment.configs import AlignmentScriptArguments, PreferenceConfig
    from alignment.redaction import REDACTED
    from alignment.commands.script_utils import parse_recipe

    recipe_file = tmp_path / "recipe.yaml"
    recipe = yaml.safe_load((ROOT / "recipes/tiny/dpo.yaml").read_text())
    recipe_file.write_text(yaml.safe_dump({**recipe, "hub_token": "hf_FROMFILE"}))
    *_, parsed = parse_recipe((AlignmentScriptArguments, PreferenceConfig, ModelConfig, DatasetMixtureConfig),
                              ["--config", str(recipe_file), "--hub_token=hf_FROMCLI"])
    assert "hf_FROM" not in yaml.safe_dump(parsed)
    assert parsed["hub_token"] == REDACTED and parsed["cli_overrides"] == [f"--hub_token={REDACTED}"]


def test_detach_hub_token_leaves_args_without_it():
    import pickle

    from trl import DPOConfig

    from alignment.redaction import detach_hub_token

    args = DPOConfig(output_dir="out", hub_token="hf_DETACH", report_to="none", bf16=False)
    assert detach_hub_token(args) == "hf_DETACH"
    assert args.hub_token is None and b"hf_DETACH" not in pickle.dumps(args)
    assert detach_hub_token(args) is None


# ------------------------------------------------------------------------------------------- hub_model_id at start
def _fail_if_loaded(*args, **kwargs):
    raise AssertionError("the model was loaded: the invalid repo id was not caught at start-up")


@pytest.mark.parametrize("main", ["dpo", "sft", "grpo", "reward"])
@pytest.mark.parametrize("bad", [
    ["--hub_model_id", "fake-user/has space"],
    ["--hub_model_id", "a/b/c"],
    ["--hub_model_id", "fake-user/model--v2"],
    # No `hub_model_id`: the repo is named after output_dir, which here cannot be a repo name.
    ["--push_to_hub", "true", "--output_dir", "{tmp}/my run"],
])
def test_invalid_hub_model_id_is_rejected_before_the_model_loads(main, bad, monkeypatch, tmp_path):
    from alignment.commands import cli, reward_cli

    monkeypatch.setattr(cli, "load_model_and_tokenizer", _fail_if_loaded)
    monkeypatch.setattr(reward_cli, "load_reward_model_and_tokenizer", _fail_if_loaded)
    entry = {"dpo": cli.dpo_main, "sft": cli.sft_main, "grpo": cli.grpo_main, "reward": reward_cli.reward_main}[main]
    argv = ["--config", str(ROOT / f"recipes/tiny/{main}.yaml"), "--output_dir", str(tmp_path / "out"),
            *[a.format(tmp=tmp_path) for a in bad]]
    with pytest.raises(ValueError, match=r"hub_model_id.*namespace/name") as err:
        entry(argv)
    assert not (tmp_path / "out").exists()
    if "--hub_model_id" not in bad:
        assert "output_dir" in str(err.value)


# --------------------------------------------------------------------------------------------------------- e2e
def test_hub_token_is_used_for_the_push_and_written_nowhere(fake_hub, tiny_model_dir, tmp_path):
    token = f"hf_TEST{secrets.token_hex(16)}"
    env_token = f"hf_ENV{secrets.token_hex(16)}"
    out = tmp_path / "out"
    env = {**os.environ, **fake_hub.client_env(tmp_path / "hf-home", token=env_token), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "scripts/run_dpo.py", "--config", "recipes/tiny/dpo.yaml",
           "--model_name_or_path", tiny_model_dir, "--output_dir", str(out), "--max_steps", "2",
           "--save_strategy", "steps", "--save_steps", "1", "--eval_limit_per_domain", "1",
           "--push_to_hub", "true", "--hub_model_id", "fake-user/tiny-secret", "--hub_token", token]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Pushed" in run.stdout
    assert token not in run.stdout + run.stderr

    # Every file the run wrote (checkpoints and binaries included) and every file the Hub received.
    written = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {"checkpoint-1/training_args.bin", "training_args.bin", "recipe.yaml", "README.md"} <= set(written)
    received = fake_hub.received_files()
    assert received
    leaks = [name for name, data in {**written, **received}.items() if token.encode() in data]
    assert leaks == [], f"the token is in {leaks}"
    from alignment.redaction import REDACTED

    assert REDACTED in (out / "recipe.yaml").read_text() and REDACTED in (out / "README.md").read_text()
    assert "training_args.bin" not in fake_hub.files("fake-user/tiny-secret")

    # The push authenticated with the token the user gave, never with the environment's.
    writes = [(method, path, auth) for method, path, auth in fake_hub.request_auth
              if "/commit/" in path or "/preupload/" in path or path == "/api/repos/create"]
    assert writes and {auth for _, _, auth in writes} == {f"Bearer {token}"}
    assert all(auth != f"Bearer {env_token}" for _, _, auth in fake_hub.request_auth)
    assert fake_hub.unknown == []


def test_doremi_writes_the_token_nowhere(tiny_model_dir, tmp_path):
    # run_doremi copies the base recipe into `main_recipe.yaml` (a recipe to run, so the token is dropped, not masked).
    from alignment.commands.doremi import run_doremi

    token = f"hf_TEST{secrets.token_hex(16)}"
    recipe = yaml.safe_load((ROOT / "recipes/tiny/doremi.yaml").read_text())
    config = tmp_path / "doremi.yaml"
    config.write_text(yaml.safe_dump({**recipe, "hub_token": token}))
    out = tmp_path / "doremi"
    run_doremi(["--config", str(config), "--output_dir", str(out), "--model_name_or_path", tiny_model_dir,
                "--reference_max_steps", "1", "--proxy_max_steps", "1"])
    leaks = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert leaks == [], f"the token is in {leaks}"
    main = yaml.safe_load((out / "main_recipe.yaml").read_text())
    assert "hub_token" not in main and main["learning_rate"] == recipe["learning_rate"]
