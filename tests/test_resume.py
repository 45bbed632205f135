"""`resume_from_checkpoint: true` resumes from the newest *complete* checkpoint (`alignment.resume`).

One finished 8-step DPO run on the tiny model (checkpoints 4 and 8) is shared by the module; the tests damage
copies of its checkpoints the way a kill during a save or a full disk does.
"""

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from alignment.commands import cli
from alignment.resume import checkpoint_problems, newest_complete_checkpoint
from alignment.commands.script_utils import resolve_resume_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def dpo_argv(model_dir, output_dir, *extra):
    return ["--config", str(ROOT / "recipes/tiny/dpo.yaml"), "--model_name_or_path", str(model_dir),
            "--output_dir", str(output_dir), "--eval_after_training", "false", *extra]


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "finished"
    cli.dpo_main(dpo_argv(tiny_model_dir, out))
    assert (out / "checkpoint-4").is_dir() and (out / "checkpoint-8").is_dir()
    return out


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def checkpoint(finished, tmp_path) -> Path:
    """A copy of the finished run's complete `checkpoint-8`, to damage."""
    return Path(shutil.copytree(finished / "checkpoint-8", tmp_path / "checkpoint-8"))


def test_a_checkpoint_the_trainer_wrote_is_complete(finished):
    assert checkpoint_problems(finished / "checkpoint-8") == []
    assert checkpoint_problems(finished / "checkpoint-4") == []


@pytest.mark.parametrize(("damage", "filename", "expected"), [
    ("truncate", "model.safetensors", "model.safetensors is unreadable"),
    ("truncate", "optimizer.pt", "optimizer.pt is truncated"),
    ("truncate", "rng_state.pth", "rng_state.pth is truncated"),
    ("truncate", "trainer_state.json", "trainer_state.json does not parse"),
    ("delete", "trainer_state.json", "trainer_state.json is missing"),
    ("delete", "model.safetensors", "no model weights"),
    ("delete", "optimizer.pt", "optimizer.pt is missing"),
    ("delete", "scheduler.pt", "scheduler.pt is missing"),
    ("delete", "rng_state.pth", "rng_state.pth is missing"),
    ("empty", "scheduler.pt", "scheduler.pt is empty"),
])
def test_a_missing_or_damaged_file_is_named(checkpoint, damage, filename, expected):
    path = checkpoint / filename
    {"truncate": truncate, "delete": Path.unlink, "empty": lambda p: p.write_bytes(b"")}[damage](path)
    problems = checkpoint_problems(checkpoint)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_save_only_model_checkpoints_need_no_optimizer_or_rng(checkpoint):
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (checkpoint / name).unlink()
    assert checkpoint_problems(checkpoint, save_only_model=True) == []
    assert len(checkpoint_problems(checkpoint)) == 3


def test_every_shard_of_a_sharded_model_is_checked(checkpoint):
    weights = load_file(checkpoint / "model.safetensors")
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: weights[k] for k in keys}, checkpoint / shard, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    (checkpoint / "model.safetensors").unlink()
    assert checkpoint_problems(checkpoint) == []
    (checkpoint / "model-00002-of-00002.safetensors").unlink()
    assert checkpoint_problems(checkpoint) == ["model-00002-of-00002.safetensors is missing"]


def test_an_adapter_checkpoint_is_complete(checkpoint):
    (checkpoint / "model.safetensors").rename(checkpoint / "adapter_model.safetensors")
    assert checkpoint_problems(checkpoint) == []


def as_two_rank_checkpoint(checkpoint: Path) -> None:
    """What two ranks write: `rng_state_<rank>.pth` and the project's `<stem>_<rank>.pt` per-process state."""
    rng = checkpoint / "rng_state.pth"
    shutil.copy(rng, checkpoint / "rng_state_1.pth")
    rng.rename(checkpoint / "rng_state_0.pth")
    for rank in (0, 1):
        torch.save({"step": 8}, checkpoint / f"loss_state_{rank}.pt")


def test_every_rank_must_have_written_its_per_process_files(checkpoint):
    as_two_rank_checkpoint(checkpoint)
    assert checkpoint_problems(checkpoint, world_size=2) == []
    assert checkpoint_problems(checkpoint, world_size=1) == []  # a one-process resume of a complete 2-rank one
    (checkpoint / "loss_state_1.pt").unlink()  # rank 1 killed before it wrote its loss state
    problems = checkpoint_problems(checkpoint, world_size=2)
    assert len(problems) == 1 and problems[0].startswith("loss_state_1.pt is missing (rank 1"), problems
    one_process = checkpoint_problems(checkpoint, world_size=1)
    assert one_process == ["loss_state_1.pt is missing (rank 1 did not finish saving)"]
    (checkpoint / "rng_state_1.pth").unlink()
    assert "rng_state_1.pth is missing" in " ".join(checkpoint_problems(checkpoint, world_size=2))


def test_deepspeed_checkpoints_need_every_ranks_optimizer_states(checkpoint):
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt"):
        (checkpoint / name).unlink()
    as_two_rank_checkpoint(checkpoint)
    tag = checkpoint / "global_step8"
    tag.mkdir()
    (checkpoint / "latest").write_text("global_step8")
    torch.save({"module": {}}, tag / "mp_rank_00_model_states.pt")
    for rank in (0, 1):
        torch.save({"optimizer": {}}, tag / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    assert checkpoint_problems(checkpoint, world_size=2) == []
    (tag / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    assert checkpoint_problems(checkpoint, world_size=2) == ["global_step8/ has no optimizer states of rank 1"]


def resume_args(output_dir) -> SimpleNamespace:
    return SimpleNamespace(resume_from_checkpoint="true", output_dir=str(output_dir), world_size=1,
                           save_only_model=False, should_log=True)


def test_no_complete_checkpoint_starts_from_scratch_with_a_warning(checkpoint, caplog):
    truncate(checkpoint / "model.safetensors")
    assert resolve_resume_checkpoint(resume_args(checkpoint.parent)) is None
    assert (checkpoint / "model.safetensors").is_file()  # left as is
    text = caplog.text
    assert "skipping incomplete" in text and "model.safetensors is unreadable" in text
    assert "no complete checkpoint" in text and "starting from scratch" in text
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "alignment")


def test_resume_skips_a_checkpoint_cut_short_by_a_kill_and_matches_the_uninterrupted_run(
        finished, tiny_model_dir, tmp_path, caplog):
    out = tmp_path / "killed"
    for step in (4, 8):
        shutil.copytree(finished / f"checkpoint-{step}", out / f"checkpoint-{step}")
    # Killed while writing checkpoint-8's optimizer: the weights are there, the optimizer is cut short, and the
    # scheduler, RNG state and trainer_state.json (written after it) never were.
    truncate(out / "checkpoint-8" / "optimizer.pt")
    for name in ("scheduler.pt", "rng_state.pth", "trainer_state.json"):
        (out / "checkpoint-8" / name).unlink()

    chosen, skipped = newest_complete_checkpoint(out)
    assert chosen == out / "checkpoint-4" and [c for c, _ in skipped] == [out / "checkpoint-8"]

    # No caplog.set_level: the records must pass the level the run itself sets up (what is printed by default).
    trainer, _ = cli.dpo_main(dpo_argv(tiny_model_dir, out, "--resume_from_checkpoint", "true"))
    assert trainer.state.global_step == 8
    text = caplog.text
    assert f"skipping incomplete {out / 'checkpoint-8'}" in text
    assert "optimizer.pt is truncated" in text and "trainer_state.json is missing" in text
    assert f"resuming from {out / 'checkpoint-4'}" in text
    full, resumed = load_file(finished / "model.safetensors"), load_file(out / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=0, atol=1e-6, msg=name)
    start = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert any(not torch.allclose(start[n], full[n]) for n in full)  # not vacuous: training moved the weights
