"""Memory of the DPO reference: full fine-tuning (TRL loads a second, frozen copy of the model) vs LoRA (the reference
is the same model with its adapters disabled, so no copy exists).

    OMP_NUM_THREADS=1 python benchmarks/lora_reference.py                       # random Llama, 512 wide, 8 layers
    OMP_NUM_THREADS=1 python benchmarks/lora_reference.py --model smollm2-135m-instruct --steps 2

Each setting runs in its own fresh process (so peak RSS belongs to it alone): build `PreferenceTrainer` (loss
`sigmoid`, beta 0.1, batch 4 pairs, same data and seed), then `--steps` optimiser steps. Reported per setting:

- `models`: instances of the model class alive after the trainer is built (2 = policy + reference copy);
- `params in memory`: parameters of the policy plus `trainer.ref_model` (0 for LoRA: `ref_model is None`);
- `trainable`: parameters the optimiser updates (the adapters under LoRA);
- `RSS after init` / `peak RSS` (ru_maxrss) minus the process's RSS just before the model is loaded, in MiB. RSS
  after init under-counts weights still memory-mapped from safetensors and untouched (the reference copy's pages
  are only faulted in by its first forward), so compare peak RSS. Peak RSS includes the optimiser state (AdamW: two fp32 tensors per trainable parameter) and activations, so the LoRA
  saving is the reference copy plus the full model's gradients and optimiser state.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_setting(mode: str, model_path: str, steps: int, lora_r: int) -> dict:
    """One setting in this process: build the trainer, train `steps` steps, return the measurements."""
    import gc

    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

    from alignment.configs import PreferenceConfig
    from alignment.modeling.models import resolve_model_name_or_path
    from alignment.testing import preference_pairs
    from alignment.trainers import PreferenceTrainer

    torch.set_num_threads(1)
    path = resolve_model_name_or_path(model_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        from alignment.modeling.models import CHATML_TEMPLATE

        tokenizer.chat_template = CHATML_TEMPLATE
    gc.collect()
    rss0 = _rss_mib()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out:
        args = PreferenceConfig(output_dir=out, per_device_train_batch_size=4, max_steps=steps, report_to="none",
                                bf16=False, use_cpu=True, logging_steps=1, seed=0, learning_rate=1e-4,
                                save_strategy="no", max_length=128, gradient_checkpointing=False)
        peft_config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules="all-linear") if mode == "lora" else None
        trainer = PreferenceTrainer(model=model, args=args, train_dataset=preference_pairs(4 * steps),
                                    processing_class=tokenizer, peft_config=peft_config)
        gc.collect()
        # Instances of the loaded class (not the inner `LlamaModel`, also a PreTrainedModel): 2 = policy + reference.
        models = sum(type(o) is type(model) for o in gc.get_objects() if isinstance(o, PreTrainedModel))
        rss_init = _rss_mib() - rss0
        policy_params = sum(p.numel() for p in trainer.model.parameters())
        ref_params = sum(p.numel() for p in trainer.ref_model.parameters()) if trainer.ref_model is not None else 0
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        trainer.train()
    return {"mode": mode, "model": model_path, "models": models, "ref_model_is_none": trainer.ref_model is None,
            "policy_params": policy_params, "ref_params": ref_params, "trainable_params": trainable,
            "rss_after_init_mib": round(rss_init, 1), "peak_rss_mib": round(_peak_rss_mib() - rss0, 1),
            "steps": steps}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="random", help="`random` (a random Llama, see --hidden-size), an embedded "
                        "alias (`smollm2-135m-instruct`) or a checkpoint directory")
    parser.add_argument("--hidden-size", type=int, default=512, help="width of the `random` model (default 512)")
    parser.add_argument("--layers", type=int, default=8, help="layers of the `random` model (default 8)")
    parser.add_argument("--steps", type=int, default=2, help="optimiser steps per setting (default 2)")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank on every linear layer (default 16)")
    parser.add_argument("--out", default=None, help="also write the results to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print("RESULT " + json.dumps(run_setting(args.child, args.model, args.steps, args.lora_r)), flush=True)
        return []

    model = args.model
    with tempfile.TemporaryDirectory() as tmp:
        if model == "random":
            from alignment.testing import save_tiny_model

            model = save_tiny_model(Path(tmp) / "model", hidden_size=args.hidden_size, num_layers=args.layers)
        results = []
        for mode in ("full", "lora"):
            cmd = [sys.executable, __file__, "--child", mode, "--model", model, "--steps", str(args.steps),
                   "--lora-r", str(args.lora_r)]
            run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
            if run.returncode != 0 or not lines:
                sys.exit(f"{mode} failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
            result = json.loads(lines[-1][len("RESULT "):])
            if args.model == "random":
                result["model"] = f"random Llama {args.hidden_size}x{args.layers}"
            results.append(result)

    print(f"model: {results[0]['model']}, {args.steps} steps, batch 4 pairs, max_length 128, fp32, 1 thread")
    print(f"{'setting':<8}{'models':>8}{'params in memory':>18}{'trainable':>12}{'RSS after init':>16}{'peak RSS':>10}")
    for r in results:
        print(f"{r['mode']:<8}{r['models']:>8}{r['policy_params'] + r['ref_params']:>18,}{r['trainable_params']:>12,}"
              f"{r['rss_after_init_mib']:>13.1f} MiB{r['peak_rss_mib']:>7.1f} MiB")
    full, lora = results
    print(f"LoRA / full: params in memory {(lora['policy_params'] + lora['ref_params']) / (full['policy_params'] + full['ref_params']):.2f}x, "
          f"peak RSS {lora['peak_rss_mib'] / full['peak_rss_mib']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
