import os

# Set before transformers / torch are imported by any test module: offline Hub, one thread (tiny ops are ~100x slower
# with the default thread pool on this CPU), no tokenizer fork warnings.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama + offline-trained tokenizer saved as a normal checkpoint directory."""
    from alignment.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


class SimulatedCrash(RuntimeError):
    """Raised by `crash_at_training_step` to stand for an interrupted run."""


@pytest.fixture
def crash_at_training_step(monkeypatch):
    """`crash(trainer_cls, step)` makes the `step`-th `training_step` call raise `SimulatedCrash`; `restore()` undoes it.

    Returns a pair of callables ``(crash, restore)``.
    """
    original = {}

    def crash(trainer_cls, step: int):
        original_step = original.setdefault(trainer_cls, trainer_cls.training_step)
        calls = {"n": 0}

        def crashing_step(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == step:
                raise SimulatedCrash("power cut")
            return original_step(self, *args, **kwargs)

        monkeypatch.setattr(trainer_cls, "training_step", crashing_step)

    def restore():
        for trainer_cls, step_fn in original.items():
            monkeypatch.setattr(trainer_cls, "training_step", step_fn)

    return crash, restore
