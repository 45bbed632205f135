"""Several machines: the multi-node configs in `accelerate_configs/`.

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
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.launching import run_launches_together
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
