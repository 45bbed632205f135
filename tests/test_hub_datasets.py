"""`dataset_name: <Hub id>` end to end: a run in a fresh process downloads a dataset repo from the local fake Hub.

`datasets.load_dataset("user/name")` asks the Hub for the repo info at a revision, lists the tree, looks for a
README / script / `.huggingface.yaml` / `dataset_infos.json` (404s are expected), and downloads the data files
through `/datasets/<id>/resolve/<rev>/<file>`. The fake Hub serves all of these (tests/fake_hub.py); here it holds
the shipped examples, once as a plain `data/train.jsonl` + `data/test.jsonl` repo and once in the layout of
HuggingFaceH4/ultrafeedback_binarized (a README `configs:` section naming the splits `train_prefs` / `test_prefs`).
"""

import os
import subprocess
import sys
from pathlib import Path

try:
    from tests.fake_hub import fake_hub  # noqa: F401 - fixture
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fake_hub import fake_hub  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "data"

ULTRAFEEDBACK_README = """---
configs:
- config_name: default
  data_files:
  - split: train_prefs
    path: data/train_prefs-*
  - split: test_prefs
    path: data/test_prefs-*
---
# A miniature of HuggingFaceH4/ultrafeedback_binarized
"""


def _run_dpo(fake_hub, tiny_model_dir, tmp_path, *extra) -> subprocess.CompletedProcess:
    env = {**os.environ, **fake_hub.client_env(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "scripts/run_dpo.py", "--config", "recipes/your-data/dpo.yaml",
           "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
           "--save_strategy", "no", "--per_device_train_batch_size", "4", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _downloaded(fake_hub, repo_id: str) -> set[str]:
    prefix = f"/datasets/{repo_id}/resolve/"
    return {path.split("/", 6)[-1] for method, path, status in fake_hub.requests
            if method == "GET" and path.startswith(prefix) and status == 200}


def test_dpo_on_a_hub_dataset_id(fake_hub, tiny_model_dir, tmp_path):
    source = EXAMPLES / "preference-standard"
    fake_hub.put_files("fake-user/prefs", {f"data/{split}.jsonl": (source / f"{split}.jsonl").read_bytes()
                                           for split in ("train", "test")}, repo_type="dataset")
    run = _run_dpo(fake_hub, tiny_model_dir, tmp_path, "--dataset_name", "fake-user/prefs")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert _downloaded(fake_hub, "fake-user/prefs") == {"data/train.jsonl", "data/test.jsonl"}
    assert "Held-out preference metrics" in run.stdout  # the repo's test split was evaluated
    assert not fake_hub.unknown


def test_dpo_on_the_ultrafeedback_hub_layout(fake_hub, tiny_model_dir, tmp_path):
    source = EXAMPLES / "ultrafeedback-binarized"
    fake_hub.put_files("fake-user/ultrafeedback", {
        "README.md": ULTRAFEEDBACK_README.encode(),
        "data/train_prefs-00000-of-00001.jsonl": (source / "train_prefs.jsonl").read_bytes(),
        "data/test_prefs-00000-of-00001.jsonl": (source / "test_prefs.jsonl").read_bytes(),
    }, repo_type="dataset")
    run = _run_dpo(fake_hub, tiny_model_dir, tmp_path, "--dataset_name", "fake-user/ultrafeedback",
                   "--dataset_train_split", "train_prefs", "--dataset_test_split", "test_prefs")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "data/train_prefs-00000-of-00001.jsonl" in _downloaded(fake_hub, "fake-user/ultrafeedback")
    assert "Held-out preference metrics" in run.stdout
    assert not fake_hub.unknown
