"""LoRA runs: adapters saved and pushed as adapters, the merge option, QLoRA start-up checks, and the LoRA reference.

The merged weights are checked against W + (alpha / r) * B @ A computed here from the base checkpoint and the saved
adapter tensors (not by calling PEFT's merge), and the reference log-probs against a separately loaded base model.
"""

import gc
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file

from alignment.testing import preference_pairs

try:
    from tests.fake_hub import fake_hub  # noqa: F401 - fixture
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fake_hub import fake_hub  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors"}


def _run_tiny_lora_dpo(fake_hub, tiny_model_dir, tmp_path, repo_id, *extra):
    out = tmp_path / "out"
    env = {**os.environ, **fake_hub.client_env(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "scripts/run_dpo.py", "--config", "recipes/tiny/dpo-lora.yaml",
           "--model_name_or_path", tiny_model_dir, "--output_dir", str(out), "--max_steps", "2",
           "--save_strategy", "no", "--eval_limit_per_domain", "2", "--push_to_hub", "true", "--hub_model_id", repo_id,
           *extra]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


def _merged_by_hand(base_dir, adapter_dir) -> dict[str, torch.Tensor]:
    """W + (lora_alpha / r) * B @ A for every adapted linear layer of the base checkpoint (plain LoRA, no rsLoRA)."""
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    base = load_file(Path(base_dir) / "model.safetensors")
    adapter = load_file(Path(adapter_dir) / "adapter_model.safetensors")
    merged = dict(base)
    prefix = "base_model.model."
    for name, a in adapter.items():
        if not name.endswith("lora_A.weight"):
            continue
        b = adapter[name.replace("lora_A", "lora_B")]
        weight = name[len(prefix):].replace("lora_A.weight", "weight")
        merged[weight] = base[weight] + scale * (b @ a)
    return merged


def test_lora_dpo_saves_and_pushes_an_adapter(fake_hub, tiny_model_dir, tmp_path):
    out = _run_tiny_lora_dpo(fake_hub, tiny_model_dir, tmp_path, "fake-user/tiny-dpo-lora")
    saved = {p.name for p in out.iterdir()}
    assert ADAPTER_FILES <= saved and "model.safetensors" not in saved and "merged" not in saved
    assert "tokenizer.json" in saved and "eval_results.json" in saved

    pushed = set(fake_hub.files("fake-user/tiny-dpo-lora"))
    assert ADAPTER_FILES <= pushed and "model.safetensors" not in pushed
    adapter = load(fake_hub.read_file("fake-user/tiny-dpo-lora", "adapter_model.safetensors"))
    local = load_file(out / "adapter_model.safetensors")
    assert set(adapter) == set(local) and all((adapter[k] == local[k]).all() for k in local)
    # Trained: LoRA initialises B = 0, so a non-zero B means the adapter was updated.
    assert any(v.abs().max() > 0 for k, v in local.items() if "lora_B" in k)

    card = fake_hub.read_file("fake-user/tiny-dpo-lora", "README.md").decode()
    front = card.split("---")[1]
    assert "library_name: peft" in front and "- lora" in front
    assert "LoRA adapter (PEFT) for" in card and tiny_model_dir in card and "PeftModel.from_pretrained" in card


def test_merge_option_pushes_base_plus_adapter(fake_hub, tiny_model_dir, tmp_path):
    out = _run_tiny_lora_dpo(fake_hub, tiny_model_dir, tmp_path, "fake-user/tiny-dpo-merged",
                             "--merge_adapters_before_push", "true")
    # The adapter stays in output_dir; the merged full model is in output_dir/merged and is what got pushed.
    assert ADAPTER_FILES <= {p.name for p in out.iterdir()}
    pushed = set(fake_hub.files("fake-user/tiny-dpo-merged"))
    assert "model.safetensors" in pushed and not (ADAPTER_FILES & pushed) and "eval_results.json" in pushed
    card = fake_hub.read_file("fake-user/tiny-dpo-merged", "README.md").decode()
    assert "library_name: transformers" in card.split("---")[1]

    remote = load(fake_hub.read_file("fake-user/tiny-dpo-merged", "model.safetensors"))
    expected = _merged_by_hand(tiny_model_dir, out)
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert set(remote) == set(expected)
    changed = [k for k in expected if not torch.equal(expected[k], base[k])]
    assert changed, "the trained adapter should change some weights"
    for name, tensor in expected.items():
        torch.testing.assert_close(remote[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_lora_sft_and_reward_save_adapters_and_merge(tiny_model_dir, tmp_path):
    from alignment.commands.cli import sft_main
    from alignment.commands.reward_cli import reward_main
    from alignment.modeling.reward_model import load_reward_model

    sft_out = tmp_path / "sft"
    sft_main(["--config", "recipes/tiny/sft.yaml", "--model_name_or_path", tiny_model_dir, "--output_dir",
              str(sft_out), "--max_steps", "2", "--eval_limit_per_domain", "2", "--use_peft", "true",
              "--lora_target_modules", "all-linear", "--learning_rate", "1e-2"])
    assert ADAPTER_FILES <= {p.name for p in sft_out.iterdir()}
    assert not (sft_out / "model.safetensors").exists()
    assert "library_name: peft" in (sft_out / "README.md").read_text()

    # A LoRA reward model: PEFT's SEQ_CLS task saves the new 1-label `score` head in full; merged, it loads and scores
    # exactly like the trained model.
    rm_out = tmp_path / "rm"
    trainer, _ = reward_main(["--config", "recipes/tiny/reward.yaml", "--model_name_or_path", tiny_model_dir,
                              "--output_dir", str(rm_out), "--max_steps", "2", "--use_peft", "true",
                              "--lora_task_type", "SEQ_CLS", "--merge_adapters_before_push", "true"])
    assert ADAPTER_FILES <= {p.name for p in rm_out.iterdir()}
    merged, tokenizer = load_reward_model(str(rm_out / "merged"), device="cpu")
    ids = tokenizer("What is 2 + 3? 5", return_tensors="pt")
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, trained(**ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without CUDA")
@pytest.mark.parametrize("field", ["load_in_4bit", "load_in_8bit"])
def test_quantized_loading_without_cuda_fails_before_loading(field, tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from alignment.commands.cli import dpo_main

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_loading)
    with pytest.raises(ValueError, match=f"`{field}: true`.*no CUDA device"):
        dpo_main(["--config", "recipes/tiny/dpo-lora.yaml", "--model_name_or_path", tiny_model_dir,
                  "--output_dir", str(tmp_path / "out"), f"--{field}", "true"])


def test_qlora_recipes_fail_on_cpu_naming_the_field(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the error raised on a machine without CUDA")
    from alignment.commands.cli import dpo_main, grpo_main, sft_main
    from alignment.commands.reward_cli import reward_main

    for main, recipe in ((dpo_main, "dpo-qlora"), (sft_main, "sft-qlora"), (grpo_main, "grpo-qlora"),
                         (reward_main, "reward-qlora")):
        # The check runs before the (embedded SmolLM2) model is resolved, so nothing is prepared or loaded.
        with pytest.raises(ValueError, match="`load_in_4bit: true`"):
            main(["--config", f"recipes/smollm2-135m/{recipe}.yaml", "--output_dir", str(tmp_path / recipe)])


def test_merge_without_lora_fails_before_loading(tiny_model_dir, tmp_path):
    from alignment.commands.cli import dpo_main

    with pytest.raises(ValueError, match="`merge_adapters_before_push: true`.*`use_peft`"):
        dpo_main(["--config", "recipes/tiny/dpo.yaml", "--model_name_or_path", tiny_model_dir,
                  "--output_dir", str(tmp_path / "out"), "--merge_adapters_before_push", "true"])


def _completion_logps(model, input_ids, attention_mask, labels):
    """Per-token log p(token t+1 | prefix) at completion positions (0 elsewhere), computed directly from logits."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    targets = input_ids[:, 1:]
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logps * (labels[:, 1:] != -100)


def test_lora_reference_is_the_base_model_with_adapters_disabled(tiny_model_dir, tmp_path):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from alignment.configs import PreferenceConfig
    from alignment.testing import trainer_test_args
    from alignment.trainers import PreferenceTrainer

    gc.collect()
    before = {id(o) for o in gc.get_objects() if isinstance(o, LlamaForCausalLM)}
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = PreferenceTrainer(
        model=policy, args=PreferenceConfig(**trainer_test_args(tmp_path)), train_dataset=preference_pairs(8),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
    )
    gc.collect()
    created = [o for o in gc.get_objects() if isinstance(o, LlamaForCausalLM) and id(o) not in before]
    assert trainer.ref_model is None
    assert created == [policy], "a LoRA run must not build a second (reference) model"

    # Move the adapters away from their zero init, so the policy differs from the base.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    model_kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    trainer.model.eval()
    ref = trainer._reference_token_logps(model_kwargs, labels)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        expected = _completion_logps(base, batch["input_ids"], batch["attention_mask"], labels)
        adapted = _completion_logps(trainer.model, batch["input_ids"], batch["attention_mask"], labels)
    mask = labels[:, 1:] != -100
    torch.testing.assert_close(ref * mask, expected, rtol=1e-5, atol=1e-5)
    assert (adapted - expected).abs().max() > 1e-3, "the adapters are active outside the reference pass"
    # The reference pass left the adapters on.
    with torch.no_grad():
        again = _completion_logps(trainer.model, batch["input_ids"], batch["attention_mask"], labels)
    torch.testing.assert_close(again, adapted)


def test_adapter_card_metadata():
    from alignment.modeling.hub import render_model_card

    card = render_model_card(model_name="me/adapter", base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
                             method="sigmoid", recipe={"use_peft": True}, adapter=True)
    front = card.split("---")[1]
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in front and "library_name: peft" in front
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in card
    full = render_model_card(model_name="me/full", base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
                             method="sigmoid", recipe={})
    assert "library_name: transformers" in full.split("---")[1] and "peft" not in full.split("---")[1]


def test_lora_reference_benchmark_counts_one_model_for_lora(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from lora_reference import main

    full, lora = main(["--hidden-size", "32", "--layers", "2", "--steps", "1", "--lora-r", "4"])
    assert full["models"] == 2 and full["ref_params"] == full["policy_params"] and not full["ref_model_is_none"]
    assert lora["models"] == 1 and lora["ref_params"] == 0 and lora["ref_model_is_none"]
    assert lora["trainable_params"] < lora["policy_params"]


def test_lora_grpo_with_kl_uses_no_reference_copy_and_merges(tiny_model_dir, tmp_path):
    from alignment.commands.cli import grpo_main

    out = tmp_path / "grpo"
    trainer, _ = grpo_main(["--config", "recipes/tiny/grpo.yaml", "--model_name_or_path", tiny_model_dir,
                            "--output_dir", str(out), "--max_steps", "1", "--eval_limit_per_domain", "2",
                            "--use_peft", "true", "--lora_target_modules", "all-linear", "--beta", "0.04",
                            "--merge_adapters_before_push", "true"])
    assert trainer.ref_model is None  # the KL reference is the policy with adapters disabled
    assert ADAPTER_FILES <= {p.name for p in out.iterdir()}
    assert (out / "merged" / "model.safetensors").is_file() and not (out / "merged" / "adapter_config.json").exists()
