"""Non-finite values stop a run instead of being trained on or saved (issue 12, item 4)."""

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from alignment.commands import cli
from alignment.testing import preference_pairs
from alignment.trainers.process_state import load_per_process_state
from alignment.trainers.finite_guard import NonFiniteGuard, NonFiniteTrainingError, nonfinite_entries
from alignment.trainers.preference import LOSS_STATE_NAME
from alignment.trainers.validation import check_preference_dataset

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- data columns
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("column", ["weight", "margin"])
def test_nonfinite_per_example_column_is_rejected_with_its_rows(column, value):
    dataset = preference_pairs(4, **{column: [1.0, 1.0, value, 1.0]})
    with pytest.raises(ValueError, match=rf"`{column}` that is not a finite number in 1 row\(s\): 2 \("):
        check_preference_dataset(dataset, "train", (column,))


def test_every_bad_row_is_named():
    dataset = preference_pairs(4, weight=[math.inf, 1.0, 2.0, math.inf])
    with pytest.raises(ValueError, match=r"2 row\(s\): 0 \(inf\), 3 \(inf\)"):
        check_preference_dataset(dataset, "train", ())  # a `weight` column is read by every loss


# ----------------------------------------------------------------------------- the per-step guard
def nan_at_step_script(step: int) -> str:
    """A run of `scripts/run_dpo.py` whose loss turns NaN at one optimizer step (a loss that diverges)."""
    return (
        "import sys\n"
        "from alignment.commands import cli\n"
        "original, calls = cli.PreferenceTrainer.compute_loss, [0]\n"
        "def compute_loss(self, *args, **kwargs):\n"
        "    calls[0] += 1\n"
        f"    return original(self, *args, **kwargs) * (float('nan') if calls[0] == {step} else 1.0)\n"
        "cli.PreferenceTrainer.compute_loss = compute_loss\n"
        "sys.exit(cli.dpo_main(sys.argv[1:]) is None)\n"
    )


def test_run_that_turns_nan_exits_nonzero_naming_the_step_and_saves_nothing(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    proc = subprocess.run(
        [sys.executable, "-c", nan_at_step_script(3), "--config", str(ROOT / "recipes/tiny/dpo.yaml"),
         "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--max_steps", "4",
         "--save_steps", "1", "--eval_after_training", "false"],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-4000:]
    assert "NonFiniteTrainingError: Training stopped at step 3: the gradient is not finite" in log, log[-4000:]
    assert "learning rate" in log and "fp16" in log
    # Steps 1-2 were checkpointed; the bad step 3 was neither applied nor saved; no final model.
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-3").exists()
    assert not (out / "model.safetensors").exists() and not (out / "eval_results.json").exists()
    weights = load_file(out / "checkpoint-2" / "model.safetensors")
    assert all(torch.isfinite(value).all() for value in weights.values())


def test_nan_on_one_ddp_rank_stops_both_before_the_step_is_saved(tiny_model_dir, tmp_path):
    """Only rank 1's loss turns NaN; DDP's gradient all-reduce carries it to rank 0 (which writes checkpoints), so
    both ranks stop at step 3 and neither a checkpoint nor a final model is written for it; the launch fails."""
    import socket

    from tests.launching import run_launch

    script = tmp_path / "nan_on_rank1.py"
    script.write_text(nan_at_step_script(3).replace("calls[0] == 3", "calls[0] == 3 and os.environ['RANK'] == '1'")
                      .replace("import sys\n", "import os, sys\n", 1))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    env.pop("WORLD_SIZE", None)
    proc = run_launch(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(ROOT / "accelerate_configs/cpu_2proc.yaml"), "--main_process_port", str(port), str(script),
         "--config", str(ROOT / "recipes/tiny/dpo.yaml"), "--model_name_or_path", str(tiny_model_dir),
         "--output_dir", str(out), "--per_device_train_batch_size", "2", "--max_steps", "4", "--save_steps", "1",
         "--eval_after_training", "false"],
        cwd=ROOT, env=env, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-4000:]
    assert "rank 1 of world size 2" in log and "Training stopped at step 3: the gradient is not finite" in log, \
        log[-4000:]
    # Rank 0's NaN-free loss did not keep it going: it raised by itself (torchrun prefixes each rank's output).
    assert any(line.startswith("[rank0]:") and "NonFiniteTrainingError" in line for line in log.splitlines())
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-3").exists()
    assert not (out / "model.safetensors").exists()


def guard_args(**overrides):
    return SimpleNamespace(**{"fp16": False, "world_size": 1, "device": torch.device("cpu"), "output_dir": "out",
                              **overrides})


def linear_with_grad(value: float) -> torch.nn.Linear:
    layer = torch.nn.Linear(2, 2)
    for p in layer.parameters():
        p.grad = torch.ones_like(p)
    layer.weight.grad[0, 1] = value
    return layer


def test_guard_raises_on_a_nan_gradient_and_names_the_parameter():
    guard, state = NonFiniteGuard(), SimpleNamespace(global_step=6)
    guard.on_pre_optimizer_step(guard_args(), state, None, model=linear_with_grad(1.0))  # finite: nothing happens
    with pytest.raises(NonFiniteTrainingError, match=r"step 7: .* 1 of 2 parameter tensors \(e.g. \['weight'\]\)"):
        guard.on_pre_optimizer_step(guard_args(), state, None, model=linear_with_grad(math.nan))


def test_guard_checks_what_the_optimizer_steps_beyond_the_model():
    """SparsePO's mask heads are stepped by the trainer's optimizer but are not part of the model."""
    model, outside = linear_with_grad(1.0), torch.nn.Parameter(torch.zeros(3))
    outside.grad = torch.tensor([0.0, math.inf, 0.0])
    optimizer = torch.optim.SGD([*model.parameters(), outside], lr=0.1)
    with pytest.raises(NonFiniteTrainingError, match=r"1 of 3 parameter tensors \(e.g. \['<parameter outside"):
        NonFiniteGuard().on_pre_optimizer_step(guard_args(), SimpleNamespace(global_step=0), None, model=model,
                                               optimizer=optimizer)


def test_guard_tolerates_fp16_loss_scaling_overflows_until_they_repeat():
    """fp16 loss scaling overflows on purpose (the step is skipped, the scale lowered): only a streak stops a run."""
    guard, state, args = NonFiniteGuard(max_fp16_overflows=3), SimpleNamespace(global_step=0), guard_args(fp16=True)
    for _ in range(2):
        guard.on_pre_optimizer_step(args, state, None, model=linear_with_grad(math.inf))
    guard.on_pre_optimizer_step(args, state, None, model=linear_with_grad(1.0))  # a good step resets the streak
    for _ in range(2):
        guard.on_pre_optimizer_step(args, state, None, model=linear_with_grad(math.inf))
    with pytest.raises(NonFiniteTrainingError, match="overflowed fp16 in 3 steps in a row"):
        guard.on_pre_optimizer_step(args, state, None, model=linear_with_grad(math.inf))


def test_guard_does_not_flag_finite_fp16_gradients_whose_norm_overflows():
    layer = torch.nn.Linear(64, 64).half()
    for p in layer.parameters():
        p.grad = torch.full_like(p, 60000.0)  # each finite in fp16; the fp16 norm is inf
    assert not torch.isfinite(torch._foreach_norm([layer.weight.grad])[0])
    NonFiniteGuard().on_pre_optimizer_step(guard_args(), SimpleNamespace(global_step=0), None, model=layer)


@pytest.mark.parametrize("key", ["loss", "grad_norm"])
def test_guard_raises_on_a_nonfinite_logged_value(key):
    with pytest.raises(NonFiniteTrainingError, match=f"step 4: the logged `{key}` is nan"):
        NonFiniteGuard().on_log(guard_args(), SimpleNamespace(global_step=4), None, logs={key: math.nan})


# ----------------------------------------------------------------------------- restored per-process state
def test_nonfinite_entries_name_the_keys():
    state = {"a": {"buffers": {"ema": torch.tensor([1.0, math.nan]), "n": torch.tensor(3)}},
             "history": [torch.zeros(2), torch.full((2,), math.inf)], "scale": math.inf, "name": "x", "rng": None}
    assert nonfinite_entries(state) == ["a.buffers.ema", "history[1]", "scale"]
    assert nonfinite_entries({"buffers": {"ema": torch.ones(2)}, "step": 3}) == []


def test_per_process_state_with_nan_is_rejected_naming_file_and_key(tmp_path):
    torch.save({"weights": torch.tensor([0.5, math.nan])}, tmp_path / "domain_weights.pt")
    with pytest.raises(ValueError, match=r"domain_weights.pt holds non-finite values .* \['weights'\]"):
        load_per_process_state(SimpleNamespace(world_size=1, process_index=0), str(tmp_path), "domain_weights.pt", "unused")


def test_resume_from_a_loss_state_with_a_nan_buffer_fails_naming_the_file(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    argv = ["--config", str(ROOT / "recipes/tiny/dpo.yaml"), "--model_name_or_path", tiny_model_dir,
            "--output_dir", str(out), "--loss_type", "beta_dpo", "--eval_after_training", "false"]
    cli.dpo_main([*argv, "--max_steps", "4"])
    path = out / "checkpoint-4" / LOSS_STATE_NAME
    saved = torch.load(path, weights_only=True)
    saved["beta_dpo"]["buffers"]["margin_mean"].fill_(math.nan)
    torch.save(saved, path)
    with pytest.raises(ValueError, match=rf"checkpoint-4/{LOSS_STATE_NAME} holds non-finite values .*"
                                         r"\['beta_dpo.buffers.margin_mean'\]"):
        cli.dpo_main([*argv, "--max_steps", "8", "--resume_from_checkpoint", "true"])
