"""A recipe with `push_to_hub: true` pushes the final model and its card; loading it back is bit-identical."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from safetensors.torch import load_file

try:
    from tests.fake_hub import fake_hub  # noqa: F401 - fixture
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fake_hub import fake_hub  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def test_run_dpo_pushes_model_and_card(fake_hub, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, **fake_hub.client_env(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "scripts/run_dpo.py", "--config", "recipes/tiny/dpo.yaml",
           "--model_name_or_path", tiny_model_dir, "--output_dir", str(out), "--max_steps", "2",
           "--save_strategy", "no", "--eval_limit_per_domain", "2",
           "--push_to_hub", "true", "--hub_model_id", "fake-user/tiny-dpo"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Pushed" in run.stdout

    # The card on the Hub is the one written next to the checkpoint, with the method and the recipe in it.
    card = fake_hub.read_file("fake-user/tiny-dpo", "README.md").decode()
    assert card == (out / "README.md").read_text()
    assert "sigmoid" in card and "task-suite" in card

    # A fresh process loads the pushed model through the endpoint: every tensor equals the local checkpoint's.
    pulled = tmp_path / "pulled.safetensors"
    loader = textwrap.dedent(f"""
        from transformers import AutoModelForCausalLM
        from safetensors.torch import save_file
        model = AutoModelForCausalLM.from_pretrained("fake-user/tiny-dpo")
        save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {str(pulled)!r})
    """)
    pull_env = {**env, "HF_HOME": str(tmp_path / "hf-home-pull")}
    run = subprocess.run([sys.executable, "-c", loader], cwd=tmp_path, env=pull_env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    local, remote = load_file(out / "model.safetensors"), load_file(pulled)
    assert set(local) <= set(remote)
    for name, tensor in local.items():
        assert remote[name].dtype == tensor.dtype and (remote[name] == tensor).all(), name
