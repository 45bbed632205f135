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
