"""Stateful losses in the trainer: the `LossState` is checkpointed and restored, so resuming is exact."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.commands import cli
from alignment.trainers.preference import LOSS_STATE_NAME

ROOT = Path(__file__).resolve().parents[1]
# momentum 0.5 and rho 0.5 (2 of 4 pairs kept) make the multinomial draw genuinely random on the tiny model: with the
# defaults the zero-initialised σ0 is so small that the outlier's weight underflows and the choice is deterministic,
# and the test would pass even without restoring the generator (checked).
COMMON = ("--loss_type", "beta_dpo", "--loss_kwargs", '{"momentum": 0.5, "rho": 0.5}', "--eval_after_training",
          "false")


def argv(model_dir, output_dir, *extra):
    return ["--config", str(ROOT / "recipes/tiny/dpo.yaml"), "--model_name_or_path", model_dir,
            "--output_dir", str(output_dir), *COMMON, *extra]


def test_beta_dpo_state_is_checkpointed_and_resume_is_exact(tiny_model_dir, tmp_path, monkeypatch,
                                                             crash_at_training_step):
    full_dir, crash_dir = tmp_path / "full", tmp_path / "crash"
    full_trainer, _ = cli.dpo_main(argv(tiny_model_dir, full_dir))
    state = full_trainer._loss_states["beta_dpo"]
    assert state.gather == full_trainer.accelerator.gather and state.generator is not None
    saved4 = torch.load(full_dir / "checkpoint-4" / LOSS_STATE_NAME, weights_only=True)["beta_dpo"]
    saved8 = torch.load(full_dir / "checkpoint-8" / LOSS_STATE_NAME, weights_only=True)["beta_dpo"]
    assert saved4["buffers"]["num_updates"].item() == 4 and saved8["buffers"]["num_updates"].item() == 8
    assert saved4["generator"] is not None
    assert not torch.equal(saved4["buffers"]["margin_mean"], saved8["buffers"]["margin_mean"])
    # Filtering really happened (batch 4, rho 0.5 -> 2 kept), so the generator state matters for the result.
    logged = [entry for entry in full_trainer.state.log_history if "beta_dpo/kept_fraction" in entry]
    assert logged and all(entry["beta_dpo/kept_fraction"] == pytest.approx(0.5) for entry in logged)

    crash, restore = crash_at_training_step
    crash(cli.PreferenceTrainer, 6)
    with pytest.raises(RuntimeError, match="power cut"):
        cli.dpo_main(argv(tiny_model_dir, crash_dir))
    restore()
    assert (crash_dir / "checkpoint-4" / LOSS_STATE_NAME).is_file() and not (crash_dir / "checkpoint-8").exists()

    restored = {}
    original_load = cli.PreferenceTrainer.load_loss_state

    def recording_load(self, checkpoint):
        original_load(self, checkpoint)
        restored.update(self._loss_states["beta_dpo"].state_dict())
        restored["checkpoint"] = checkpoint

    monkeypatch.setattr(cli.PreferenceTrainer, "load_loss_state", recording_load)
    trainer, _ = cli.dpo_main(argv(tiny_model_dir, crash_dir, "--resume_from_checkpoint", "true"))
    assert trainer.state.global_step == 8
    assert Path(restored["checkpoint"]).name == "checkpoint-4"
    crash4 = torch.load(crash_dir / "checkpoint-4" / LOSS_STATE_NAME, weights_only=True)["beta_dpo"]
    for key, value in crash4["buffers"].items():
        assert torch.equal(restored["buffers"][key], value), key
        assert torch.equal(value, saved4["buffers"][key]), key  # the crashed run matched the full one up to step 4
    assert torch.equal(restored["generator"], crash4["generator"])

    full = load_file(full_dir / "model.safetensors")
    resumed = load_file(crash_dir / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=0, atol=1e-6, msg=name)
    resumed8 = torch.load(crash_dir / "checkpoint-8" / LOSS_STATE_NAME, weights_only=True)["beta_dpo"]
    for key, value in saved8["buffers"].items():
        torch.testing.assert_close(resumed8["buffers"][key], value, rtol=0, atol=1e-6, msg=key)
    start = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert any(not torch.allclose(start[n], full[n]) for n in full)


def test_resume_without_loss_state_fails_clearly(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cli.dpo_main(argv(tiny_model_dir, out, "--max_steps", "4"))
    (out / "checkpoint-4" / LOSS_STATE_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="beta_dpo"):
        cli.dpo_main(argv(tiny_model_dir, out, "--max_steps", "8", "--resume_from_checkpoint", "true"))


def test_stateless_run_writes_no_loss_state(tiny_model_dir, tmp_path):
    out = tmp_path / "dpo"
    trainer, _ = cli.dpo_main(["--config", str(ROOT / "recipes/tiny/dpo.yaml"), "--model_name_or_path",
                               tiny_model_dir, "--output_dir", str(out), "--eval_after_training", "false",
                               "--max_steps", "4"])
    assert trainer._loss_states == {}
    assert not (out / "checkpoint-4" / LOSS_STATE_NAME).exists()
    assert json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
