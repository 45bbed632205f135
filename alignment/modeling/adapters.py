"""LoRA / QLoRA runs: merging a trained adapter into its base model (the start-up checks on quantized loading are in
`alignment.modeling.model_loading`).

A recipe with `use_peft: true` trains LoRA adapters (TRL's `ModelConfig` fields `lora_r`, `lora_alpha`,
`lora_target_modules`, ...); the Trainer then saves only the adapter (`adapter_config.json` +
`adapter_model.safetensors`) to `output_dir`, and that adapter is what `push_to_hub` uploads. With
`merge_adapters_before_push: true` the adapter is also merged into the base weights (W + (alpha / r) B A, PEFT's
`merge_and_unload`) and the full model is written to ``<output_dir>/merged``; that folder is the one pushed.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from .model_loading import zero3_init_disabled

logger = logging.getLogger("alignment")

MERGED_SUBDIR = "merged"


def is_adapter_dir(path: str | Path) -> bool:
    """Whether `path` holds a PEFT adapter (what `save_model` writes for a PEFT model) rather than full weights."""
    return (Path(path) / "adapter_config.json").is_file()


def merge_adapter(trainer, adapter_dir: str | Path, base_path: str, out_dir: str | Path, tokenizer=None,
                  dtype: torch.dtype | None = None) -> Path:
    """Merge the adapter saved in `adapter_dir` into a fresh full-precision copy of `base_path`; save to `out_dir`.

    Reads the adapter from disk rather than merging the trainer's model in place: the trained model stays usable
    (evaluation, `trainer.end()`), ZeRO-3-sharded runs need no gather, and a QLoRA adapter is merged into the
    unquantized base weights instead of being rounded into 4-bit ones. The base model's class and config come from
    the trained model (so a reward model's 1-label `score` head, saved by PEFT as a module to save, fits), minus any
    quantization config. `dtype` defaults to the trained weights' dtype (for a 4-bit base, the recipe's `dtype`). Returns
    `out_dir`. Main process only.
    """
    from peft import PeftModel

    if not is_adapter_dir(adapter_dir):
        raise ValueError(f"`merge_adapters_before_push` is set but {adapter_dir} holds no adapter "
                         "(adapter_config.json): the run did not train with `use_peft: true`.")
    trained = trainer.accelerator.unwrap_model(trainer.model)
    trained_base = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
    config = copy.deepcopy(trained_base.config)
    quantized = getattr(config, "quantization_config", None) is not None
    if quantized:
        del config.quantization_config
    if dtype is None:
        # A 4-bit base has no float weight dtype to copy: use the recipe's (`dtype`, the bnb compute dtype).
        dtype = (getattr(config, "dtype", None) or torch.float32) if quantized else next(trained_base.parameters()).dtype
    base = type(trained_base).from_pretrained(base_path, config=config, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out_dir = Path(out_dir)
    merged.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    logger.info("Merged the adapter of %s into %s and saved the full model to %s", adapter_dir, base_path, out_dir)
    return out_dir


def merged_output(trainer, script_args, tokenizer, base_path: str, output_dir: str) -> str | None:
    """``<output_dir>/merged`` with the merged full model when the recipe sets `merge_adapters_before_push`, else None.

    Call on the main process after `trainer.save_model(output_dir)` (the adapter is read back from there).
    """
    if not getattr(script_args, "merge_adapters_before_push", False):
        return None
    # Rank 0 alone: under ZeRO-3 `from_pretrained` would otherwise build the base inside `zero.Init` and wait on the
    # other ranks forever (as in `evaluate_trained_model`).
    with zero3_init_disabled():
        return str(merge_adapter(trainer, output_dir, base_path, Path(output_dir) / MERGED_SUBDIR, tokenizer))
