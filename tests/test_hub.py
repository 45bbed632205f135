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

from alignment.modeling.hub import DEFAULT_IGNORE_PATTERNS, render_model_card, write_model_card

try:
    from tests.fake_hub import card_metadata_errors, fake_hub, git_blob_oid  # noqa: F401 - `fake_hub` is a fixture
except ImportError:  # tests/ not importable as a package (e.g. run from another cwd): import it as a sibling module
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fake_hub import card_metadata_errors, fake_hub, git_blob_oid  # noqa: F401

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


# ----------------------------------------------------------------------------------------- Hub-valid card metadata
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
# An `eval_results.json` as `finalize_run` gets it: rewards per domain before/after, held-out preference metrics.
RESULTS = {
    "before": {"rewards": {"accuracy_reward": {"addition": 0.25, "comparison": 0.5}},
               "accuracy": {"addition": 0.25, "comparison": 0.5}, "count": {"addition": 4, "comparison": 4, "all": 8}},
    "after": {"rewards": {"accuracy_reward": {"addition": 0.5, "comparison": 0.75}, "tiny-rm": {"all": -0.125}},
              "accuracy": {"addition": 0.5, "comparison": 0.75}, "count": {"addition": 4, "comparison": 4, "all": 8}},
    "preference": {"eval_loss": 0.625, "eval_rewards/accuracies": 0.75, "epoch": 1.0, "eval_runtime": 0.5},
    "world_size": 1,
}


def _converted_alias_dir(tmp_path: Path) -> Path:
    """A directory as `prepare_embedded_model` leaves it: its marker names the alias it was converted from."""
    from alignment.modeling.models import MARKER_FILE, MARKER_FORMAT

    model_dir = tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    model_dir.mkdir(parents=True)
    (model_dir / MARKER_FILE).write_text(json.dumps({"format": MARKER_FORMAT, "alias": "smollm2-135m-instruct"}))
    return model_dir


def test_card_metadata_names_hub_ids_only_and_passes_the_hub_checks(tmp_path):
    """Local data and a local base model are described in the body; the metadata holds only Hub ids."""
    local_data = tmp_path / "my data" / "pairs"
    local_data.mkdir(parents=True)
    card = render_model_card(
        model_name="my-org/my-dpo-model", base_model=str(_converted_alias_dir(tmp_path)), method="sigmoid",
        recipe={"dataset_name": str(local_data)},
        # `data/train.jsonl` is not here, but it is a file name, not a Hub id (though `validate_repo_id` accepts it).
        datasets=[str(local_data), "task-suite", "HuggingFaceH4/ultrafeedback_binarized", "data/train.jsonl"],
    )
    assert card_metadata_errors(card) == []
    front, body = _split_card(card)
    assert front["base_model"] == SMOLLM2  # the converted alias maps back to the model it was made from
    assert front["datasets"] == ["HuggingFaceH4/ultrafeedback_binarized"]
    assert front["license"] == "apache-2.0"  # SmolLM2's, recorded with the embedded model
    assert front["pipeline_tag"] == "text-generation" and front["library_name"] == "transformers"
    assert front["tags"] == ["trl", "alignment", "dpo", "sigmoid"]
    assert f"local data, `{local_data}` (not on the Hub" in body
    assert "embedded verifiable task suite (`task-suite`" in body and "local data, `data/train.jsonl`" in body
    assert str(tmp_path / "cache") not in body  # the cache path of the converted model is nobody's business
    assert f"This model is [{SMOLLM2}](https://huggingface.co/{SMOLLM2})" in body


def test_card_datasets_from_the_recipe_mixtures(tmp_path):
    recipe = {"datasets": [{"path": "org/trl-style"}, {"path": str(tmp_path)}],
              "dataset_mixture": {"datasets": [{"id": "org/handbook-style", "weight": 0.5}], "seed": 0},
              "share_mixture": {"datasets": [{"path": "task-suite"}, {"path": "org/shares"}]}}
    front, body = _split_card(render_model_card(model_name="me/m", base_model=SMOLLM2, method="sft", recipe=recipe))
    assert front["datasets"] == ["org/trl-style", "org/handbook-style", "org/shares"]
    assert f"local data, `{tmp_path}`" in body and "(`task-suite`, all domains)" in body


def test_card_base_model_alias_hub_id_and_local_dir(tmp_path):
    # The alias itself; the Hub id (whose license the toolkit knows); any other Hub id; a plain local directory.
    for base, hub_id, license_id in [("smollm2-135m-instruct", SMOLLM2, "apache-2.0"), (SMOLLM2, SMOLLM2, "apache-2.0"),
                                     ("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B", "unknown"),
                                     (str(tmp_path), None, "unknown")]:
        card = render_model_card(model_name="me/m", base_model=base, method="sft", recipe={})
        front, body = _split_card(card)
        assert card_metadata_errors(card) == [], base
        assert front.get("base_model") == hub_id and front["license"] == license_id, base
    assert f"a local checkpoint, `{tmp_path}` (not on the Hub)" in body
    assert "Set `hub_license` in the recipe" in body


def test_card_license_from_the_recipe_and_bad_licenses(tmp_path):
    from alignment.configs import AlignmentScriptArguments

    front, body = _split_card(render_model_card(model_name="me/m", base_model="meta-llama/Llama-3.2-1B", method="sft",
                                                recipe={}, license="llama3.2"))
    assert front["license"] == "llama3.2" and "as set by the recipe's `hub_license`" in body
    with pytest.raises(ValueError, match=r"`license: Apache 2.0` is not a license the Hub knows"):
        render_model_card(model_name="me/m", base_model=None, method="sft", recipe={}, license="Apache 2.0")
    # A recipe's `hub_license` is checked when the recipe is parsed, before any model is loaded.
    with pytest.raises(ValueError, match=r"`hub_license: apache2` is not a license the Hub knows.*apache-2.0"):
        AlignmentScriptArguments(dataset_name="task-suite", hub_license="apache2")
    assert AlignmentScriptArguments(dataset_name="task-suite", hub_license="mit").hub_license == "mit"


def test_card_model_index_holds_the_trained_model_results():
    card = render_model_card(model_name="my-org/my-dpo-model", base_model=SMOLLM2, method="sigmoid",
                             recipe={"dataset_name": "task-suite"}, results=RESULTS, datasets=["task-suite"])
    assert card_metadata_errors(card) == []
    front, body = _split_card(card)
    (entry,) = front["model-index"]
    assert entry["name"] == "my-org/my-dpo-model"
    (result,) = entry["results"]
    assert result["task"] == {"type": "text-generation", "name": "Held-out evaluation"}
    assert result["dataset"] == {"name": "alignment task suite (held-out split)", "type": "task-suite", "split": "test"}
    # The final model's numbers only (0.25 is the base model's, before training), no Trainer bookkeeping (epoch,
    # runtime): mean reward per domain, then the preference metrics.
    assert result["metrics"] == [
        {"type": "accuracy_reward", "value": 0.5, "name": "accuracy_reward/addition", "config": "addition"},
        {"type": "accuracy_reward", "value": 0.75, "name": "accuracy_reward/comparison", "config": "comparison"},
        {"type": "tiny-rm", "value": -0.125, "name": "tiny-rm/all", "config": "all"},
        {"type": "eval_loss", "value": 0.625, "name": "eval_loss"},
        {"type": "eval_rewards/accuracies", "value": 0.75, "name": "eval_rewards/accuracies"},
    ]
    # huggingface_hub reads the same results back from the card.
    from huggingface_hub import ModelCard

    parsed = ModelCard(card).data.eval_results
    assert [(r.metric_name, r.metric_value) for r in parsed][:2] == [("accuracy_reward/addition", 0.5),
                                                                     ("accuracy_reward/comparison", 0.75)]
    lines = body.splitlines()
    assert "| Reward | Domain | Before | After | Prompts |" in lines
    assert "| accuracy_reward | addition | 0.2500 | 0.5000 | 4 |" in lines
    assert "| tiny-rm | all | – | -0.1250 | 8 |" in lines
    assert "| eval_rewards/accuracies | 0.7500 |" in lines and "| epoch | 1.0000 |" not in lines


def test_card_says_the_method_in_words_with_its_citations():
    card = render_model_card(model_name="me/m", base_model=SMOLLM2, method="sigmoid+madpo", recipe={})
    front, body = _split_card(card)
    assert front["tags"] == ["trl", "alignment", "dpo", "sigmoid", "madpo"]
    assert "fine-tuned with Direct Preference Optimization (DPO family)." in body
    assert "SIGMOID" not in body and "a post-training method" not in body
    assert "- `sigmoid`: DPO (Rafailov et al., NeurIPS 2023, arXiv 2305.18290)." in body.splitlines()
    assert "@article{rafailov2023direct," in body and "@software{vonwerra2020trl," in body
    # MADPO's paper is not spelled out in `alignment.citations`: an arXiv entry that makes up no title.
    assert "howpublished = {arXiv:2510.05342}" in body and "url     = {https://arxiv.org/abs/2510.05342}" in body

    front, body = _split_card(render_model_card(model_name="me/m", base_model=SMOLLM2, method="group-rl (dr_grpo)",
                                                recipe={}))
    assert front["tags"] == ["trl", "alignment", "grpo", "dr_grpo"]
    assert "Group Relative Policy Optimization" in body and "@article{liu2025understanding," in body
    front, body = _split_card(render_model_card(model_name="me/rm", base_model=SMOLLM2, method="reward", recipe={}))
    assert front["tags"] == ["trl", "alignment", "reward-model"] and front["pipeline_tag"] == "text-classification"
    assert "model = AutoModelForSequenceClassification.from_pretrained(model_id)" in body.splitlines()


def test_card_embeds_the_run_plots(tmp_path):
    (tmp_path / "plots").mkdir()
    for name in ("loss.png", "rewards.png"):
        (tmp_path / "plots" / name).write_bytes(b"\x89PNG")
    (tmp_path / "plots" / "notes.txt").write_text("not a plot")
    body = _split_card(write_model_card(tmp_path, model_name="me/m", base_model=SMOLLM2, method="sft",
                                        recipe={}).read_text())[1]
    lines = body.splitlines()
    assert "## Training curves" in lines
    assert "![plots/loss.png](plots/loss.png)" in lines and "![plots/rewards.png](plots/rewards.png)" in lines
    assert "notes.txt" not in body
    assert "## Training curves" not in render_model_card(model_name="me/m", base_model=SMOLLM2, method="sft", recipe={})


def test_finalize_run_card_names_the_full_repo_id(tmp_path):
    from alignment.commands.script_utils import finalize_run

    out = tmp_path / "my-dpo-model"
    finalize_run(output_dir=str(out), method="sigmoid", base_model=SMOLLM2, recipe={"dataset_name": "task-suite"},
                 results=RESULTS, push_to_hub=False, hub_model_id="my-org/my-dpo-model", datasets=["task-suite"])
    card = (out / "README.md").read_text()
    assert 'model_id = "my-org/my-dpo-model"' in card.splitlines()  # not "my-dpo-model", which loads nothing
    front, _ = _split_card(card)
    assert front["license"] == "apache-2.0" and front["model-index"][0]["name"] == "my-org/my-dpo-model"
    assert card_metadata_errors(card) == []


def test_finalize_run_merged_folder_carries_the_plots_its_card_links(tmp_path):
    from alignment.commands.script_utils import finalize_run

    out, merged = tmp_path / "out", tmp_path / "out" / "merged"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "loss.png").write_bytes(b"\x89PNG")
    merged.mkdir()
    finalize_run(output_dir=str(out), method="sft", base_model=SMOLLM2, recipe={}, results={}, push_to_hub=False,
                 hub_model_id="me/m", datasets=None, merged_dir=str(merged))
    # The merged folder is what gets pushed: the plot its card embeds must be in it.
    assert (merged / "plots" / "loss.png").read_bytes() == b"\x89PNG"
    assert "![plots/loss.png](plots/loss.png)" in (merged / "README.md").read_text().splitlines()


def test_fake_hub_checks_card_metadata_like_the_hub():
    good = "---\nlicense: apache-2.0\nbase_model: org/base\ndatasets:\n- org/data\ntags: [trl]\n---\n# m\n"
    assert card_metadata_errors(good) == [] and card_metadata_errors("# no metadata\n") == []
    bad = {
        "license: apache2\n": '"license" must be one of [apache-2.0, mit,',
        "base_model: /home/me/.cache/alignment/models/smollm2-135m-instruct\n": '"base_model" with value',
        "datasets:\n- /tmp/data/train.jsonl\n": '"datasets" with value "/tmp/data/train.jsonl" is not valid',
        "datasets: [org/a, org//b]\n": '"datasets" with value "org//b" is not valid',
        "model-index:\n- name: m\n  results:\n  - task: {type: text-generation}\n    dataset: {type: d, name: d}\n"
        "    metrics:\n    - {type: acc}\n": "metrics[0] needs a string `type` and a number or string `value`",
        "model-index:\n- name: m\n  results:\n  - task: {name: x}\n    dataset: {type: d}\n    metrics: []\n":
            "task.type is required",
        "tags: [trl, {a: 1}]\n": '"tags" must be an array of strings',
        "a: [unclosed\n": "invalid YAML",
    }
    for front, message in bad.items():
        errors = card_metadata_errors(f"---\n{front}---\n# m\n")
        assert any(message in e for e in errors), (front, errors)


def test_fake_hub_refuses_a_commit_of_a_bad_card(fake_hub):
    """The server side: a README.md with invalid metadata is refused at commit with a 400, as the Hub does, even by
    a client that skipped `/api/validate-yaml`."""
    import base64
    import urllib.error
    import urllib.request

    fake_hub.create_repo("model", "fake-user/m", private=False)

    def commit(card: str) -> tuple[int, str]:
        lines = [{"key": "header", "value": {"summary": "card"}},
                 {"key": "file", "value": {"path": "README.md", "encoding": "base64",
                                           "content": base64.b64encode(card.encode()).decode()}}]
        request = urllib.request.Request(f"{fake_hub.endpoint}/api/models/fake-user/m/commit/main", method="POST",
                                         data="\n".join(json.dumps(line) for line in lines).encode(),
                                         headers={"Authorization": "Bearer hf_fake"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, ""
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("X-Error-Message", "")

    status, message = commit("---\ndatasets:\n- /tmp/local/data\nlicense: apache-2.0\n---\n# m\n")
    assert status == 400 and message.startswith("Invalid metadata in README.md.")
    assert fake_hub.rejected_cards == [['"datasets" with value "/tmp/local/data" is not valid. Use a dataset id from '
                                        'https://hf.co/datasets.']]
    assert set(fake_hub.files("fake-user/m")) == {".gitattributes"}
    assert commit("---\ndatasets:\n- org/data\nlicense: apache-2.0\n---\n# m\n")[0] == 200
    assert "README.md" in fake_hub.files("fake-user/m")


# --------------------------------------------------------------------------------------------------------- e2e
PUSH_SCRIPT = """
import json, sys
from alignment.modeling.hub import push_folder_to_hub
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
