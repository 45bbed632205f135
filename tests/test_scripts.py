"""End-to-end runs of the recipe scripts on the tiny model, in-process (a few seconds each)."""

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from alignment.commands import cli

ROOT = Path(__file__).resolve().parents[1]


def dpo_argv(model_dir, output_dir, *extra):
    return ["--config", str(ROOT / "recipes/tiny/dpo.yaml"), "--model_name_or_path", model_dir,
            "--output_dir", str(output_dir), *extra]


def test_run_dpo_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "dpo"
    trainer, results = cli.dpo_main(dpo_argv(tiny_model_dir, out, "--eval_before_training", "true"))
    assert trainer.state.global_step == 8
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "checkpoint-4").is_dir() and (out / "checkpoint-8").is_dir()
    saved = json.loads((out / "eval_results.json").read_text())
    for stage in ("before", "after"):
        assert set(saved[stage]["accuracy"]) == {"addition", "comparison", "all"}
        assert saved[stage]["count"]["all"] == 8
    assert "eval_rewards/accuracies" in saved["preference"]
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["loss_type"] == "sigmoid" and "--output_dir" in recipe["cli_overrides"]
    card = (out / "README.md").read_text()
    assert "sigmoid" in card and "accuracy" in card
    # Precision followed the device: this machine has no GPU, so the run was fp32 without the recipe saying so.
    assert trainer.args.bf16 is False
    assert next(trainer.model.parameters()).dtype == torch.float32


def test_run_sft_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "sft"
    argv = ["--config", str(ROOT / "recipes/tiny/sft.yaml"), "--model_name_or_path", tiny_model_dir,
            "--output_dir", str(out)]
    trainer, results = cli.sft_main(argv)
    assert trainer.state.global_step == 4
    assert (out / "model.safetensors").is_file()
    assert "after" in json.loads((out / "eval_results.json").read_text())


def test_cli_override_and_unknown_recipe_key_fail_fast(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    recipe = yaml.safe_load((ROOT / "recipes/tiny/dpo.yaml").read_text())
    recipe["loss_typ"] = "sigmoid"  # a typo must not be ignored
    bad.write_text(yaml.safe_dump(recipe))
    with pytest.raises((ValueError, SystemExit)):
        cli.dpo_main(["--config", str(bad), "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path)])


def test_interrupted_run_resumes_to_the_same_parameters(tiny_model_dir, tmp_path, crash_at_training_step):
    common = ("--eval_after_training", "false")
    full_dir, crash_dir = tmp_path / "full", tmp_path / "crash"
    cli.dpo_main(dpo_argv(tiny_model_dir, full_dir, *common))

    # Crash in the middle of step 6, after checkpoint-4 was written.
    crash, restore = crash_at_training_step
    crash(cli.PreferenceTrainer, 6)
    with pytest.raises(RuntimeError, match="power cut"):
        cli.dpo_main(dpo_argv(tiny_model_dir, crash_dir, *common))
    restore()
    assert (crash_dir / "checkpoint-4").is_dir() and not (crash_dir / "checkpoint-8").exists()
    assert not (crash_dir / "model.safetensors").exists()

    trainer, _ = cli.dpo_main(dpo_argv(tiny_model_dir, crash_dir, *common, "--resume_from_checkpoint", "true"))
    assert trainer.state.global_step == 8
    full = load_file(full_dir / "model.safetensors")
    resumed = load_file(crash_dir / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=0, atol=1e-6, msg=name)
    # ... and differ from the starting point, so the comparison is not vacuous.
    start = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert any(not torch.allclose(start[n], full[n]) for n in full)


def test_console_script_exits_zero_after_a_run(tiny_model_dir, tmp_path):
    """`alignment-grpo` (installed by `pip install -e .`) runs the recipe and exits 0: pip's wrapper calls
    `sys.exit(entry())`, so an entry returning the trainer and results would exit 1 after a successful run."""
    import shutil
    import subprocess
    import sys

    script = shutil.which("alignment-grpo", path=str(Path(sys.executable).parent))
    assert script, "the console script is missing: install the package (`make install` / `pip install -e .`)"
    out = tmp_path / "console"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    proc = subprocess.run([script, "--config", str(ROOT / "recipes/tiny/grpo.yaml"), "--model_name_or_path",
                           str(tiny_model_dir), "--output_dir", str(out), "--max_steps", "1"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (out / "eval_results.json").is_file()
