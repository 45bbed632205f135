"""Running a multi-process launch from a test.

Known defect, under investigation: now and then (about 1 launch in 15 on the shared 2-core machine, seen only under
load) a rank of a 2-process gloo launch aborts at interpreter exit with "terminate called without an active
exception", after training, evaluation and saving have all finished. The launch is then retried once, and only for
that signature; every other failure fails the test at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

TEARDOWN_ABORT = "terminate called without an active exception"


def run_launch(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True, **kwargs)`, retried once on the teardown abort only."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0 and TEARDOWN_ABORT in proc.stdout + proc.stderr:
        print(f"retrying after the known teardown abort (rc {proc.returncode})")
        proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    return proc


def run_launches_together(cmds: list[list[str]], *, timeout: float, grace_s: float = 60,
                          **kwargs) -> list[subprocess.CompletedProcess]:
    """Start every command at once (the machines of one multi-node launch) and wait for all of them.

    Each output is stdout and stderr interleaved (in `.stdout`). When one command fails, the others are given
    `grace_s` to finish, then killed with every process they started: machines still waiting for a dead peer in the
    rendezvous or a collective would otherwise hang until `timeout`. Retried once, all together, when a command
    failed with the teardown abort only (see the module docstring).
    """
    procs = _run_together(cmds, timeout=timeout, grace_s=grace_s, **kwargs)
    if any(p.returncode != 0 and TEARDOWN_ABORT in p.stdout for p in procs):
        print(f"retrying after the known teardown abort (rc {[p.returncode for p in procs]})")
        procs = _run_together(cmds, timeout=timeout, grace_s=grace_s, **kwargs)
    return procs


def _run_together(cmds, *, timeout, grace_s, **kwargs) -> list[subprocess.CompletedProcess]:
    with contextlib.ExitStack() as stack:
        # Files, not pipes: a full pipe of one command would block it while this waits on another.
        logs = [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in cmds]
        procs = []
        stack.callback(_kill_trees, procs)  # also when this is interrupted: no launcher outlives the test
        procs += [subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, **kwargs)
                  for cmd, log in zip(cmds, logs)]
        deadline, first_failure, killed = time.monotonic() + timeout, None, ""
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if first_failure is None and any(p.returncode not in (None, 0) for p in procs):
                first_failure = now
            if now > deadline or (first_failure is not None and now > first_failure + grace_s):
                killed = f"\n[killed: {'timeout' if now > deadline else 'another command failed'}]"
                _kill_trees(procs)
                break
            time.sleep(0.2)
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read() + killed)
    return [subprocess.CompletedProcess(cmd, p.returncode, out, "") for cmd, p, out in zip(cmds, procs, outputs)]


def _kill_trees(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            # torchelastic starts each rank in a session of its own, so the launcher's process group does not hold
            # them: collect the whole tree first (a killed parent's children are re-parented), then kill it.
            for pid in [p.pid, *_descendants(p.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            p.wait()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def free_port() -> int:
    """A TCP port free on this machine now (for `--main_process_port`)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_cpu_2proc(script: str | Path, args: list[str], *, extra_env: dict[str, str] | None = None,
                     timeout: float = 600) -> subprocess.CompletedProcess:
    """`accelerate launch` of ``script args`` with two CPU processes (`accelerate_configs/cpu_2proc.yaml`, gloo), from
    the repository root, quiet and offline, this checkout first on PYTHONPATH; retried once on the teardown abort."""
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1",
               WANDB_DISABLED="true", **(extra_env or {}),
               PYTHONPATH=os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(root / "accelerate_configs/cpu_2proc.yaml"), "--main_process_port", str(free_port()), str(script),
           *args]
    return run_launch(cmd, cwd=root, env=env, timeout=timeout)
