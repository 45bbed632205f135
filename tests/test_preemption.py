"""SIGTERM (what Slurm and cloud schedulers send before killing) saves a checkpoint and exits with status 143; the
run then resumes from it (`alignment.preemption`, `alignment.resume`).

Real signals throughout: sent by the process to itself in the middle of a step (in-process, so the step it stops at
is exact), and from outside to a 1-process and a 2-process run of `scripts/run_dpo.py`.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.commands import cli
from alignment.resume import checkpoint_problems, checkpoints_newest_first
from alignment.preemption import PREEMPTED_EXIT_CODE
from tests.launching import run_launch

ROOT = Path(__file__).resolve().parents[1]
LONG = ("--max_steps", "32", "--save_steps", "1000")  # 2 epochs of the tiny data, 35-100 ms a step: time to signal
TIMEOUT_S = 300


def dpo_args(model_dir, output_dir, *extra) -> list[str]:
    return ["--config", str(ROOT / "recipes/tiny/dpo.yaml"), "--model_name_or_path", str(model_dir),
            "--output_dir", str(output_dir), "--eval_after_training", "false", *extra]


def assert_same_weights(actual_dir: Path, expected_dir: Path, start_dir: Path):
    actual, expected = load_file(actual_dir / "model.safetensors"), load_file(expected_dir / "model.safetensors")
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    start = load_file(start_dir / "model.safetensors")
    assert any(not torch.allclose(start[n], expected[n]) for n in expected)  # not vacuous


def only_checkpoint(output_dir: Path) -> tuple[Path, int]:
    checkpoints = checkpoints_newest_first(output_dir)
    assert len(checkpoints) == 1, checkpoints
    return checkpoints[0], int(checkpoints[0].name.split("-")[1])


def assert_stopped_unfinished(output_dir: Path):
    # A checkpoint, not a finished run: no final model, evaluation results or recipe (TRL writes a README.md with
    # every checkpoint, so that one is there).
    for name in ("model.safetensors", "eval_results.json", "recipe.yaml"):
        assert not (output_dir / name).exists(), name


def test_sigterm_mid_step_saves_that_step_exits_143_and_resumes_to_the_same_weights(tiny_model_dir, tmp_path,
                                                                                      monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    cli.dpo_main(dpo_args(tiny_model_dir, full))
    # The test's own handler: without the run's, the signal must not kill pytest; it must be back afterwards.
    received = []

    def record(signum, frame):
        received.append(signum)

    handler_before = signal.signal(signal.SIGTERM, record)

    original_step = cli.PreferenceTrainer.training_step
    calls = {"n": 0}

    def step_signalling_at_3(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of optimizer step 3
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(cli.PreferenceTrainer, "training_step", step_signalling_at_3)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.dpo_main(dpo_args(tiny_model_dir, cut))
        handler_after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, handler_before)
        monkeypatch.setattr(cli.PreferenceTrainer, "training_step", original_step)

    assert exited.value.code == PREEMPTED_EXIT_CODE == 143
    assert received == [] and handler_after is record  # the run's handler got the signal; the test's is back
    checkpoint, step = only_checkpoint(cut)
    assert step == 3  # step 3 finished, then saved (the recipe saves every 4 steps: this one is the signal's)
    assert checkpoint_problems(checkpoint) == []
    assert_stopped_unfinished(cut)

    trainer, _ = cli.dpo_main(dpo_args(tiny_model_dir, cut, "--resume_from_checkpoint", "true"))
    assert trainer.state.global_step == 8
    assert_same_weights(cut, full, Path(tiny_model_dir))


@pytest.mark.parametrize("main", ["sft", "grpo"])
def test_every_recipe_script_saves_and_exits_on_sigterm(tiny_model_dir, tmp_path, monkeypatch, main):
    """The other trainers get the same callback from `train_and_save` (SFT's tiny recipe saves no checkpoints at all:
    preemption saves one anyway)."""
    from alignment.trainers.group_rl import GroupRLTrainer
    from alignment.trainers.sft import DomainSFTTrainer

    trainer_cls = {"sft": DomainSFTTrainer, "grpo": GroupRLTrainer}[main]
    original_step, calls = trainer_cls.training_step, {"n": 0}

    def step_signalling_at_2(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(trainer_cls, "training_step", step_signalling_at_2)
    out = tmp_path / main
    with pytest.raises(SystemExit) as exited:
        getattr(cli, f"{main}_main")(["--config", str(ROOT / f"recipes/tiny/{main}.yaml"), "--model_name_or_path",
                                      str(tiny_model_dir), "--output_dir", str(out), "--eval_after_training", "false"])
    assert exited.value.code == PREEMPTED_EXIT_CODE
    checkpoint, step = only_checkpoint(out)
    assert step == 2 and checkpoint_problems(checkpoint) == []
    assert_stopped_unfinished(out)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TQDM_DISABLE="1", WANDB_DISABLED="true", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def run_until_logged_then_sigterm(cmd: list[str], *, every_rank: bool) -> tuple[int, str]:
    """Start `cmd`, wait for its first logged training step, send SIGTERM, return ``(exit status, output)``.

    `every_rank`: signal the launcher's process group and each of its child processes too (torchelastic starts the
    ranks in sessions of their own), as Slurm signals every process of a job step.
    """
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines, deadline = [], time.monotonic() + TIMEOUT_S
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("{'loss'"):
                break
            assert time.monotonic() < deadline, "".join(lines)[-4000:]
        else:
            pytest.fail("the run ended before logging a training step:\n" + "".join(lines)[-4000:])
        targets = [proc.pid]
        if every_rank:
            os.killpg(proc.pid, signal.SIGTERM)
            targets = _children(proc.pid)
        for pid in targets:
            os.kill(pid, signal.SIGTERM)
        lines.append(proc.stdout.read())
        return proc.wait(timeout=TIMEOUT_S), "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_sigterm_from_outside_a_one_process_run(tiny_model_dir, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "preempted"
    cmd = [sys.executable, str(ROOT / "scripts/run_dpo.py"), *dpo_args(tiny_model_dir, out, *LONG)]
    status, log = run_until_logged_then_sigterm(cmd, every_rank=False)
    assert status == PREEMPTED_EXIT_CODE, log[-4000:]
    assert "rank 0: preempted (SIGTERM)" in log
    checkpoint, step = only_checkpoint(out)
    assert 0 < step < 32 and checkpoint_problems(checkpoint) == []
    assert_stopped_unfinished(out)

    resumed = subprocess.run([*cmd, "--resume_from_checkpoint", "true"], cwd=ROOT, env=_env(), capture_output=True,
                             text=True, timeout=TIMEOUT_S)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    assert f"resume_from_checkpoint: resuming from {checkpoint}" in log  # printed at the default log level
    cli.dpo_main(dpo_args(tiny_model_dir, reference, *LONG))
    assert_same_weights(out, reference, Path(tiny_model_dir))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_to_every_rank_of_a_two_process_run(tiny_model_dir, tmp_path):
    out = tmp_path / "ddp"

    def launch_cmd(*extra):
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "accelerate_configs/cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
                str(ROOT / "scripts/run_dpo.py"),
                *dpo_args(tiny_model_dir, out, *LONG, "--per_device_train_batch_size", "2", *extra)]

    status, log = run_until_logged_then_sigterm(launch_cmd(), every_rank=True)
    # The ranks exit 143; the launcher (torchelastic's agent, signalled too) forwards SIGTERM to them, waits for
    # them and then re-raises the signal as an error: never a success.
    print(f"launcher exit status after SIGTERM: {status}")
    assert status != 0, log[-4000:]
    assert "rank 0: preempted (SIGTERM)" in log and "rank 1: preempted (SIGTERM)" in log, log[-6000:]
    checkpoint, step = only_checkpoint(out)
    assert 0 < step < 32
    assert checkpoint_problems(checkpoint, world_size=2) == []
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert_stopped_unfinished(out)

    resumed = run_launch(launch_cmd("--resume_from_checkpoint", "true"), cwd=ROOT, env=_env(), timeout=TIMEOUT_S)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-6000:]
    assert f"resume_from_checkpoint: resuming from {checkpoint}" in log
    assert "rank 1 of world size 2" in log
    assert checkpoints_newest_first(out)[0].name == "checkpoint-32" and (out / "model.safetensors").is_file()


REDUCE_ON_ONE_RANK = """
import sys
import torch.distributed as dist
from alignment.preemption import any_process

rank, port = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
print(any_process(rank == 1), any_process(False))
dist.destroy_process_group()
"""


def test_a_signal_seen_by_one_rank_stops_every_rank():
    """The flag is max-reduced over ranks: a rank the signal has not reached yet stops at the same step."""
    port = str(_free_port())
    ranks = [subprocess.Popen([sys.executable, "-c", REDUCE_ON_ONE_RANK, str(rank), port], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [rank.communicate(timeout=TIMEOUT_S) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], outputs
    assert [out.split() for out, _ in outputs] == [["True", "False"], ["True", "False"]]
