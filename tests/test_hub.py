"""Model card rendering, and push -> pull round trip of a tiny model through a local fake Hub (tests/fake_hub.py).

The push and the pull run in subprocesses because `huggingface_hub` reads HF_ENDPOINT / HF_HUB_DISABLE_XET /
HF_HUB_OFFLINE at import time, and this test process already imported it in offline mode (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from alignment.hub import DEFAULT_IGNORE_PATTERNS, render_model_card, write_model_card

try:
    from tests.fake_hub import fake_hub, git_blob_oid  # noqa: F401 - `fake_hub` is a fixture
except ImportError:  # tests/ not importable as a package (e.g. run from another cwd): import it as a sibling module
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fake_hub import fake_hub, git_blob_oid  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]

RECIPE = {
    "model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "method": "dpo",
    "beta": 0.1,
    "learning_rate": 5.0e-7,
    "loss_type": ["sigmoid", "sft"],
    "dataset_mixture": {"math": 0.5, "code": 0.3, "chat": 0.2},
    "output_dir": Path("outputs/smollm2-dpo"),
    "bf16": True,
}
METRICS = {"eval_loss": 0.6931, "rewards/margins": 0.25, "accuracy/math": 0.75, "accuracy/code": 0.5, "steps": 120}


def _split_card(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    end = card.index("\n---\n", 4)
    return yaml.safe_load(card[4:end]), card[end + 5 :]


def _card(**overrides):
    kwargs = dict(
        model_name="fake-user/smollm2-135m-dpo",
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        method="DPO",
        recipe=RECIPE,
        metrics=METRICS,
        datasets=["HuggingFaceH4/ultrafeedback_binarized"],
    )
    kwargs.update(overrides)
    return render_model_card(**kwargs)


# --------------------------------------------------------------------------------------------------------- unit
def test_model_card_front_matter():
    front, _ = _split_card(_card())
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert front["library_name"] == "transformers"
    assert front["datasets"] == ["HuggingFaceH4/ultrafeedback_binarized"]
    assert {"alignment", "trl", "dpo"} <= set(front["tags"])
    assert front["model_name"] == "fake-user/smollm2-135m-dpo"


def test_model_card_body_sections():
    card = _card()
    _, body = _split_card(card)
    lines = body.splitlines()
    assert "# fake-user/smollm2-135m-dpo" in lines
    assert "## Training method" in lines and "Direct Preference Optimization" in body
    # The recipe as a YAML block that round-trips to the recipe (Path values become strings).
    start = lines.index("```yaml") + 1
    recipe_block = "\n".join(lines[start : lines.index("```", start)])
    assert yaml.safe_load(recipe_block) == {**RECIPE, "output_dir": "outputs/smollm2-dpo"}
    assert "beta: 0.1" in recipe_block.splitlines()
    assert "  math: 0.5" in recipe_block.splitlines()
    # Metrics table, hand-checked rows; accuracy/<domain> keys go to their own table.
    assert "| Metric | Value |" in lines
    assert "| eval_loss | 0.6931 |" in lines
    assert "| rewards/margins | 0.2500 |" in lines
    assert "| steps | 120 |" in lines
    assert "| Domain | Accuracy |" in lines
    assert "| math | 0.7500 |" in lines and "| code | 0.5000 |" in lines
    assert "| accuracy/math | 0.7500 |" not in lines
    # Loading snippet and framework versions.
    assert 'model_id = "fake-user/smollm2-135m-dpo"' in lines
    assert "model = AutoModelForCausalLM.from_pretrained(model_id)" in lines
    import transformers
    import trl

    assert f"- transformers: {transformers.__version__}" in lines
    assert f"- trl: {trl.__version__}" in lines
    for name in ("torch", "peft", "accelerate", "datasets"):
        assert any(line.startswith(f"- {name}: ") for line in lines), name


def test_model_card_without_metrics_or_datasets_and_local_base():
    card = _card(metrics=None, datasets=None, base_model="/tmp/some/local/dir", method="grpo")
    front, body = _split_card(card)
    assert "datasets" not in front
    assert "base_model" not in front  # a local path is not valid Hub metadata: mentioned in the text only
    assert "`/tmp/some/local/dir`" in body
    assert {"alignment", "trl", "grpo"} <= set(front["tags"])
    assert "No evaluation metrics" in body
    assert "Group Relative Policy Optimization" in body


def test_write_model_card(tmp_path):
    path = write_model_card(tmp_path / "out", **dict(
        model_name="m", base_model="org/base", method="sft", recipe={"a": 1}, metrics={}, datasets=[]
    ))
    assert path == tmp_path / "out" / "README.md"
    assert path.read_text() == render_model_card(
        model_name="m", base_model="org/base", method="sft", recipe={"a": 1}, metrics={}, datasets=[]
    )


# --------------------------------------------------------------------------------------------------------- e2e
PUSH_SCRIPT = """
import json, sys
from alignment.hub import push_folder_to_hub
print(json.dumps({"url": push_folder_to_hub(sys.argv[1], sys.argv[2], commit_message=sys.argv[3])}))
"""

PULL_SCRIPT = """
import json, sys
import torch
from safetensors.torch import save_file
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
from transformers import AutoModelForCausalLM, AutoTokenizer

repo_id, out_dir, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = AutoModelForCausalLM.from_pretrained(repo_id)
tokenizer = AutoTokenizer.from_pretrained(repo_id)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out_dir}/pulled.safetensors")
chat = tokenizer.apply_chat_template([{"role": "user", "content": "2 + 3"}], add_generation_prompt=True, tokenize=False)
readme = open(hf_hub_download(repo_id, "README.md"), encoding="utf-8").read()
errors = {}
try:
    hf_hub_download(repo_id, "does-not-exist.json")
except EntryNotFoundError:
    errors["missing_file"] = "EntryNotFoundError"
try:
    hf_hub_download("fake-user/no-such-repo", "config.json")
except RepositoryNotFoundError:
    errors["missing_repo"] = "RepositoryNotFoundError"
json.dump(
    {
        "ids": [tokenizer(t)["input_ids"] for t in texts],
        "chat": chat,
        "readme": readme,
        "errors": errors,
        "model_path": model.name_or_path,
    },
    open(f"{out_dir}/pulled.json", "w"),
)
"""

TEXTS = ["what is 12 + 7 = 19", "reverse string abc", "<|im_start|>user\nhello<|im_end|>\n", "The answer is 42."]


def _run(script: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-6000:]}"
    return proc


def test_push_and_pull_roundtrip_through_fake_hub(fake_hub, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.testing import save_tiny_model

    repo_id = "fake-user/tiny-dpo"
    model_dir = Path(save_tiny_model(tmp_path / "model"))
    card_path = write_model_card(
        model_dir,
        model_name=repo_id,
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        method="dpo",
        recipe=RECIPE,
        metrics=METRICS,
        datasets=["HuggingFaceH4/ultrafeedback_binarized"],
    )
    card = card_path.read_text(encoding="utf-8")
    # Leftovers a Trainer writes that must not be pushed.
    (model_dir / "checkpoint-5").mkdir()
    (model_dir / "checkpoint-5" / "model.safetensors").write_bytes(b"\0stale")
    (model_dir / "checkpoint-5" / "optimizer.pt").write_bytes(b"\0opt")
    (model_dir / "optimizer.pt").write_bytes(b"\0opt")

    env = {**os.environ, **fake_hub.client_env(tmp_path / "hf-home-push")}
    env.pop("HF_HUB_CACHE", None), env.pop("HUGGINGFACE_HUB_CACHE", None)
    out = _run(PUSH_SCRIPT, [str(model_dir), repo_id, "first push"], env, REPO_ROOT)
    url = json.loads(out.stdout.strip().splitlines()[-1])["url"]
    head = fake_hub.files(repo_id)
    commit_oid = fake_hub.repos[("model", repo_id)].branches["main"]
    assert url == f"{fake_hub.endpoint}/{repo_id}/commit/{commit_oid}"

    # What is on the hub: the output dir minus the ignored leftovers (plus the repo's initial .gitattributes).
    local_files = sorted(
        p.relative_to(model_dir).as_posix()
        for p in model_dir.rglob("*")
        if p.is_file() and not p.relative_to(model_dir).as_posix().startswith("checkpoint-") and p.name != "optimizer.pt"
    )
    assert sorted(set(head) - {".gitattributes"}) == local_files
    assert "model.safetensors" in local_files and "README.md" in local_files
    for rel in local_files:
        assert fake_hub.read_file(repo_id, rel) == (model_dir / rel).read_bytes(), rel

    # Upload paths: the safetensors file went through preupload -> LFS batch -> PUT -> verify -> lfsFile commit line;
    # the JSON / text files went inline (base64) in the NDJSON commit.
    weights = (model_dir / "model.safetensors").read_bytes()
    weights_oid = hashlib.sha256(weights).hexdigest()
    assert fake_hub.lfs_uploads == [{"oid": weights_oid, "size": len(weights)}]
    assert fake_hub.lfs_commits == ["model.safetensors"]
    assert head["model.safetensors"].lfs and head["model.safetensors"].sha256 == weights_oid
    assert {"config.json", "README.md", "tokenizer.json"} <= set(fake_hub.regular_uploads)
    assert not head["config.json"].lfs
    assert head["config.json"].git_oid == git_blob_oid((model_dir / "config.json").read_bytes())
    assert fake_hub.commit_payloads[-1][0]["value"]["summary"] == "first push"
    assert set(fake_hub.auth_headers) == {"Bearer hf_fake"}

    # A second push with only the card changed: one new commit, weights neither re-uploaded nor re-committed.
    card_path.write_text(card + "\nUpdated.\n", encoding="utf-8")
    _run(PUSH_SCRIPT, [str(model_dir), repo_id, "update card"], env, REPO_ROOT)
    assert len(fake_hub.lfs_uploads) == 1 and fake_hub.lfs_commits == ["model.safetensors"]
    assert [line["value"]["path"] for line in fake_hub.commit_payloads[-1][1:]] == ["README.md"]
    card_path.write_text(card, encoding="utf-8")
    _run(PUSH_SCRIPT, [str(model_dir), repo_id, "restore card"], env, REPO_ROOT)

    # Pull it back in a fresh process with an empty cache, by repo id only.
    pull_env = {**os.environ, **fake_hub.client_env(tmp_path / "hf-home-pull")}
    _run(PULL_SCRIPT, [repo_id, str(tmp_path), json.dumps(TEXTS)], pull_env, tmp_path)
    pulled = json.loads((tmp_path / "pulled.json").read_text())
    assert (tmp_path / "hf-home-pull" / "hub" / f"models--{repo_id.replace('/', '--')}").is_dir()

    from safetensors.torch import load_file

    pulled_state = load_file(tmp_path / "pulled.safetensors")
    original = AutoModelForCausalLM.from_pretrained(model_dir)
    original_state = original.state_dict()
    assert set(pulled_state) == set(original_state)
    for name, tensor in original_state.items():
        assert pulled_state[name].dtype == tensor.dtype, name
        assert torch.equal(pulled_state[name], tensor), name

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert pulled["ids"] == [tokenizer(t)["input_ids"] for t in TEXTS]
    assert pulled["chat"] == tokenizer.apply_chat_template(
        [{"role": "user", "content": "2 + 3"}], add_generation_prompt=True, tokenize=False
    )
    assert pulled["readme"] == card == fake_hub.read_file(repo_id, "README.md").decode("utf-8")
    assert pulled["errors"] == {"missing_file": "EntryNotFoundError", "missing_repo": "RepositoryNotFoundError"}
    assert fake_hub.unknown == [], f"fake hub got requests it does not implement: {fake_hub.unknown}"


def test_ignore_patterns_cover_trainer_leftovers():
    from fnmatch import fnmatch

    def ignored(path):
        return any(fnmatch(path, p) for p in DEFAULT_IGNORE_PATTERNS)

    for path in ["checkpoint-10/model.safetensors", "checkpoint-10/optimizer.pt", "optimizer.pt", "scheduler.pt",
                 "rng_state.pth", "rng_state_3.pth", "global_step10/mp_rank_00_model_states.pt",
                 # The pickled TrainingArguments: not needed to load the model (recipe.yaml holds the config).
                 "training_args.bin", "merged/training_args.bin"]:
        assert ignored(path), path
    for path in ["model.safetensors", "model-00001-of-00002.safetensors", "config.json", "README.md",
                 "tokenizer.json", "recipe.yaml", "adapter_model.safetensors"]:
        assert not ignored(path), path
