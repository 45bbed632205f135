"""Several machines: the multi-node configs in `accelerate_configs/` and `scripts/slurm/`.

Two "machines" x one process on localhost: each machine is its own `accelerate launch`, as on a cluster (one per
node, e.g. from scripts/slurm/launch.slurm), both started at once with the shared config file and what a machine
changes on its command line (`--machine_rank 0|1 --main_process_ip 127.0.0.1 --main_process_port <free port>`),
plus the CPU stand-ins for the GPU settings: `--num_processes 2` (one process per machine instead of 8) and
`--mixed_precision no` (fp32, like the 1-process run). `num_machines: 2`, the static rendezvous and `same_network`
come from the file. Both machines write into one output_dir, as machines on a cluster's shared filesystem do. The
comparison with the 1-process run at the same global batch (2 x 2 == 1 x 4) is test_distributed's, with its
tolerance and for the same reason (measured max |diff| here: 1.1e-5 DDP, 5.5e-6 ZeRO-3, for a movement of 7.9e-3).
Measured on the shared 2-core box: 1 process 5.5-6 s, 2 machines DDP 13-16 s (25 s under load), ZeRO-3 16-68 s
(2.5 min under load; slow-marked, see below).

The Slurm script is run without Slurm: `srun`, `scontrol` and `accelerate` are stand-ins on PATH, so what is
checked is the command line every node gets (parsed by accelerate's own parser) and when the job is requeued. What
`accelerate launch` itself returns when its ranks are preempted is checked with the real launcher.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from alignment.preemption import PREEMPTED_EXIT_CODE
from tests.launching import _descendants, _kill_trees, run_launches_together
from tests.test_distributed import (
    CONFIGS,
    LOSS_ATOL,
    MIN_MOVEMENT,
    PARAM_ATOL,
    ROOT,
    TIMEOUT_S,
    Run,
    _dpo_args,
    _env,
    _free_port,
    _require_deepspeed,
    _run,
    assert_params_close,
)

MULTINODE_CONFIGS = ["ddp_multinode.yaml", "zero3_multinode.yaml"]
SIGNAL_TIMEOUT_S = 120  # the launches with tests/scripts/wait_for_sigterm.py take 2-4 s


@pytest.fixture(scope="module")
def single(tiny_model_dir, tmp_path_factory) -> Run:
    """1 process x 4 (the recipe's batch size)."""
    out = tmp_path_factory.mktemp("multinode") / "single"
    return _run([sys.executable, *_dpo_args(tiny_model_dir, out)], out).check()


def launch_machines(config: str, model_dir, output_dir: Path, machines: int = 2) -> list[Run]:
    port = str(_free_port())
    cmds = [[sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
             "--num_processes", str(machines), "--machine_rank", str(rank),
             "--main_process_ip", "127.0.0.1", "--main_process_port", port, "--mixed_precision", "no",
             *_dpo_args(model_dir, output_dir, "--per_device_train_batch_size", "2")]
            for rank in range(machines)]
    start = time.monotonic()
    procs = run_launches_together(cmds, cwd=ROOT, env=_env(), timeout=TIMEOUT_S)
    seconds = time.monotonic() - start
    print(f"{config}, {machines} machines: {seconds:.1f}s")
    return [Run(output_dir, proc, seconds) for proc in procs]


@pytest.mark.parametrize("config", MULTINODE_CONFIGS)
def test_the_multinode_configs_are_for_two_machines_meeting_at_the_main_process(config):
    from accelerate.commands.config.config_args import load_config_from_file

    load_config_from_file(str(CONFIGS / config))  # accelerate reads it (an unknown or misspelt key raises)
    settings = yaml.safe_load((CONFIGS / config).read_text())
    assert settings["num_machines"] == 2 and settings["num_processes"] % settings["num_machines"] == 0
    assert settings["rdzv_backend"] in {"static", "c10d"}
    # With same_network true accelerate passes only master_addr/port, which the c10d rendezvous ignores (each
    # machine would wait at its own localhost:29400); false passes rdzv_endpoint=main_process_ip:port to both.
    assert settings["same_network"] is False
    # Every cluster has its own address for machine 0: it must come from the command line, not a stale default.
    assert "main_process_ip" not in settings
    if settings["distributed_type"] == "DEEPSPEED":
        # One torchrun per machine (what srun starts); the default, pdsh, wants ssh and a hostfile.
        assert settings["deepspeed_config"]["deepspeed_multinode_launcher"] == "standard"


@pytest.mark.parametrize("config", [
    "ddp_multinode.yaml",
    # accelerate's DeepSpeed launcher path (a torchrun per machine, `deepspeed_multinode_launcher: standard`): from
    # 16 s to 2.5 min on the shared 2-core box, so it runs with `make test-slow`; test_distributed covers ZeRO-3 on
    # one machine in the default suite.
    pytest.param("zero3_multinode.yaml", marks=pytest.mark.slow),
])
def test_two_machines_match_one_process_at_the_same_global_batch(config, single, tiny_model_dir, tmp_path):
    if config.startswith("zero"):
        _require_deepspeed()
    machines = launch_machines(config, tiny_model_dir, tmp_path / "two-machines")
    for rank, machine in enumerate(machines):
        machine.check()
        # Each machine ran exactly its own rank of the one world: a config that does not span the machines gives
        # each of them a world of its own (rank 0 twice, or two ranks on every machine).
        assert f"rank {rank} of world size 2" in machine.log, machine.log[-4000:]
        assert f"rank {1 - rank} of world size" not in machine.log and "of world size 1" not in machine.log
    out = machines[0].output_dir
    assert machines[0].results()["world_size"] == 2
    # Both machines wrote into the shared checkpoint: rank 1 its RNG state, rank 0 everything else.
    assert (out / "checkpoint-8" / "rng_state_0.pth").is_file() and (out / "checkpoint-8" / "rng_state_1.pth").is_file()

    start, one = load_file(Path(tiny_model_dir) / "model.safetensors"), single.params()
    assert max((one[k] - start[k]).abs().max().item() for k in start) > MIN_MOVEMENT  # not vacuous
    assert_params_close(machines[0].params(), one, PARAM_ATOL)
    assert len(machines[0].losses()) == 8
    assert machines[0].losses() == pytest.approx(single.losses(), abs=LOSS_ATOL, rel=0)


# --- scripts/slurm/launch_node.sh with the real launcher -------------------------------------------------------

def _launch_node(tmp_path, *script_args) -> subprocess.Popen:
    env = dict(_env(), SLURM_NODEID="0", PYTHONUNBUFFERED="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # this venv's `accelerate`
    cmd = ["bash", str(ROOT / "scripts/slurm/launch_node.sh"), "--config_file", str(CONFIGS / "cpu_2proc.yaml"),
           "--main_process_port", str(_free_port()), str(ROOT / "tests/scripts/wait_for_sigterm.py"), *script_args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_ranks_then_sigterm_every_process(proc: subprocess.Popen) -> str:
    lines: queue.Queue[str | None] = queue.Queue()
    # A thread reads, so that a launch that hangs silently fails at the deadline instead of blocking the read.
    threading.Thread(target=lambda: [*map(lines.put, proc.stdout), lines.put(None)], daemon=True).start()
    seen, waiting, deadline = [], set(), time.monotonic() + SIGNAL_TIMEOUT_S
    try:
        while len(waiting) < 2:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                pytest.fail("the ranks did not start in time:\n" + "".join(seen)[-4000:])
            if line is None:
                pytest.fail("the launch ended before its ranks started:\n" + "".join(seen)[-4000:])
            seen.append(line)
            waiting = set(re.findall(r"rank (\d+) waiting for SIGTERM", "".join(seen)))
        # What Slurm does (`--signal`, `scancel --signal=TERM`): one SIGTERM to every process of the step, i.e.
        # the node's shell, the launcher and the ranks (which torchelastic starts in sessions of their own).
        for pid in [proc.pid, *_descendants(proc.pid)]:
            os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=SIGNAL_TIMEOUT_S)
        while (line := lines.get(timeout=SIGNAL_TIMEOUT_S)) is not None:
            seen.append(line)
        return "".join(seen)
    finally:
        _kill_trees([proc])


def test_a_node_whose_ranks_were_preempted_exits_143_although_the_launcher_exits_1(tmp_path):
    # The launcher alone: it forwards the SIGTERM, waits for the ranks (which exit 143) and then fails with the
    # signal, status 1, the same as a crash. This is why launch_node.sh exists.
    plain = subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu_2proc.yaml"),
         "--main_process_port", str(_free_port()), str(ROOT / "tests/scripts/wait_for_sigterm.py")],
        cwd=ROOT, env=dict(_env(), PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = _wait_for_ranks_then_sigterm_every_process(plain)
    print(f"accelerate launch after SIGTERM: exit status {plain.returncode}")
    assert plain.returncode not in (0, 143), log[-4000:]

    node = _launch_node(tmp_path)
    log = _wait_for_ranks_then_sigterm_every_process(node)
    assert node.returncode == PREEMPTED_EXIT_CODE == 143, log[-4000:]
    assert "exiting 143 (preempted)" in log


def test_a_node_whose_rank_crashed_keeps_the_failure(tmp_path):
    node = _launch_node(tmp_path, "--crash")
    log = node.communicate(timeout=SIGNAL_TIMEOUT_S)[0]
    assert node.returncode == 1, log[-4000:]


# --- scripts/slurm/launch.slurm without Slurm -------------------------------------------------------------------

STAND_INS = {
    # One task per node, as `srun --ntasks-per-node=1` starts them, each with its SLURM_NODEID (and TASK_PID, its
    # pid, for the preempted launcher below); exits with the highest task status, as srun does.
    "srun": """#!/bin/bash
while [[ $1 == --* ]]; do echo "$1" >> "$RECORD/srun.options"; shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
    SLURM_NODEID=$node SLURM_PROCID=$node bash -c 'export TASK_PID=$$; exec "$@"' task "$@" & pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid"; s=$?; ((s > status)) && status=$s; done
exit $status
""",
    "scontrol": """#!/bin/bash
case "$1 $2" in
    "show hostnames") printf 'gpu07\\ngpu08\\n' ;;
    "requeue "*) echo "$2" >> "$RECORD/requeued" ;;
    *) exit 1 ;;
esac
""",
    # The node's launcher: records its arguments, then finishes, crashes, or is preempted: Slurm's SIGTERM reaches
    # the task (the node's shell) and the launcher, which exits 1 on it, as the real one does.
    "accelerate": """#!/bin/bash
printf '%s\\n' "$@" > "$RECORD/node$SLURM_NODEID.args"
case "$FAKE_OUTCOME" in
    preempted) trap 'exit 1' TERM; kill -TERM "$TASK_PID" $$; sleep 5 >/dev/null 2>&1 & wait; exit 1 ;;
    crash) exit 1 ;;
    *) exit 0 ;;
esac
""",
}


def run_slurm_script(tmp_path, *args, outcome="done", restarts=0) -> subprocess.CompletedProcess:
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir(exist_ok=True)
    record.mkdir(exist_ok=True)
    for name, text in STAND_INS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", RECORD=str(record),
               FAKE_OUTCOME=outcome, SLURM_JOB_ID="4242", SLURM_NNODES="2", SLURM_JOB_NODELIST="gpu[07-08]",
               SLURM_SUBMIT_DIR=str(ROOT), SLURM_RESTART_COUNT=str(restarts))
    for name in ("GPUS_PER_NODE", "SLURM_GPUS_ON_NODE", "MAIN_PROCESS_PORT", "MAX_REQUEUES", "ALIGNMENT_ROOT"):
        env.pop(name, None)
    # From elsewhere: sbatch runs a copy of the script from its spool directory, with the submit directory set.
    return subprocess.run(["bash", str(ROOT / "scripts/slurm/launch.slurm"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_slurm_script_starts_one_launcher_per_node_with_its_machine_rank(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    proc = run_slurm_script(tmp_path, "dpo", "recipes/tiny/dpo.yaml", "zero3_multinode", "--", "--beta", "0.05")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = tmp_path / "record"
    assert not (record / "requeued").exists()
    parsed = []
    for node in (0, 1):
        argv = (record / f"node{node}.args").read_text().splitlines()
        assert argv[0] == "launch"
        args = launch_command_parser().parse_args(argv[1:])  # accelerate's own parser accepts the line
        parsed.append(args)
        assert args.machine_rank == node
        assert args.num_machines == 2 and args.num_processes == 16  # 2 nodes x 8 GPUs (the default)
        assert args.main_process_ip == "gpu07"  # the first node of the allocation, whose SLURM_NODEID is 0
        assert (ROOT / args.config_file).samefile(CONFIGS / "zero3_multinode.yaml")
        assert args.training_script == "scripts/run_dpo.py"
        assert args.training_script_args == ["--config", "recipes/tiny/dpo.yaml", "--resume_from_checkpoint",
                                             "true", "--beta", "0.05"]
    # Apart from the rank, every node runs the same line (the same rendezvous port in particular).
    assert {k: v for k, v in vars(parsed[0]).items() if k != "machine_rank"} == \
           {k: v for k, v in vars(parsed[1]).items() if k != "machine_rank"}
    options = (record / "srun.options").read_text().split()
    assert "--ntasks-per-node=1" in options and "--kill-on-bad-exit=1" in options


@pytest.mark.parametrize(("outcome", "restarts", "status", "requeued"), [
    ("done", 0, 0, False),
    ("crash", 0, 1, False),  # a crash would crash again: not requeued
    ("preempted", 0, 143, True),
    ("preempted", 20, 143, False),  # MAX_REQUEUES (20) reached
])
def test_slurm_script_requeues_a_preempted_job_only(tmp_path, outcome, restarts, status, requeued):
    proc = run_slurm_script(tmp_path, "dpo", "recipes/tiny/dpo.yaml", outcome=outcome, restarts=restarts)
    assert proc.returncode == status, proc.stdout + proc.stderr
    requeue_log = tmp_path / "record" / "requeued"
    assert requeue_log.exists() == requeued, proc.stdout + proc.stderr
    if requeued:
        assert requeue_log.read_text().split() == ["4242"]


def test_slurm_script_names_a_missing_file_before_starting_anything(tmp_path):
    proc = run_slurm_script(tmp_path, "dpo", "recipes/tiny/no-such-recipe.yaml")
    assert proc.returncode == 2
    assert "no file recipes/tiny/no-such-recipe.yaml" in proc.stderr
    assert not (tmp_path / "record" / "node0.args").exists()
