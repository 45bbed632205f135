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


def test_a_run_on_local_data_pushes_a_card_the_hub_accepts(fake_hub, tiny_model_dir, tmp_path):
    """Local preference data and a model converted from the embedded alias: the Hub refuses a card whose `datasets`
    holds a local path, so the card lists Hub ids only, and `base_model` is the Hub id the alias was made from."""
    import json
    import shutil

    import yaml

    from alignment.modeling.models import MARKER_FILE, MARKER_FORMAT

    model_dir = tmp_path / "smollm2-135m-instruct"  # the tiny model, marked as if converted from the alias
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / MARKER_FILE).write_text(json.dumps({"format": MARKER_FORMAT, "alias": "smollm2-135m-instruct"}))
    data = tmp_path / "pairs"
    data.mkdir()
    rows = [{"prompt": f"What is {a} + 1?", "chosen": str(a + 1), "rejected": str(a + 2)} for a in range(8)]
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = yaml.safe_load((ROOT / "recipes/tiny/dpo.yaml").read_text())
    for key in ("task_domains", "train_limit_per_domain"):  # task-suite settings
        recipe.pop(key)
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    env = {**os.environ, **fake_hub.client_env(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "scripts/run_dpo.py", "--config", str(tmp_path / "dpo.yaml"), "--model_name_or_path",
           str(model_dir), "--dataset_name", str(data), "--output_dir", str(out), "--max_steps", "1",
           "--save_strategy", "no", "--push_to_hub", "true", "--hub_model_id", "fake-user/tiny-dpo-local"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert fake_hub.rejected_cards == []

    card = fake_hub.read_file("fake-user/tiny-dpo-local", "README.md").decode()
    assert card == (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and front["license"] == "apache-2.0"
    assert "datasets" not in front and f"local data, `{data}`" in card
    assert {"trl", "alignment", "dpo", "sigmoid"} <= set(front["tags"])
    metrics = {m["name"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    results = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_rewards/accuracies"] == results["preference"]["eval_rewards/accuracies"]
    assert 'model_id = "fake-user/tiny-dpo-local"' in card
