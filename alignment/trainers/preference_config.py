"""`PreferenceTrainer`'s start-up checks that need no model: loss hyper-parameters, and what `padding_free` needs.

`resolve_loss_hparams` splits the shared `beta` / `label_smoothing` / `loss_kwargs` among the selected losses and
rejects the TRL options the registry replaces; `check_padding_free_losses` and `check_padding_free` refuse what a
packed row cannot carry (the latter also probes, once, that the model keeps packed sequences apart).
"""

from __future__ import annotations

import logging
from typing import Any

from accelerate.utils import is_peft_model

from ..losses import get_preference_loss, validate_preference_loss
from ..packing import check_packing_isolates, register_packed_sdpa

logger = logging.getLogger(__name__)


def resolve_loss_hparams(args) -> dict[str, dict[str, Any]]:
    """Split `beta`, `label_smoothing` and `loss_kwargs` among the selected losses; reject what nothing uses."""
    recomputed = ("Per-token reference log-probs are recomputed each step and losses are chosen with `loss_type` "
                  "(see `alignment.losses.list_preference_losses()`).")
    unsupported = {  # option: (value, default, what to do instead)
        "f_divergence_type": (args.f_divergence_type, "reverse_kl", recomputed),
        "ld_alpha": (args.ld_alpha, None, recomputed),
        "use_weighting": (args.use_weighting, False, recomputed),
        "precompute_ref_log_probs": (args.precompute_ref_log_probs, False, (
            "Set `reference_cache_dir: <directory>` instead: it runs the same one-off pass over the data with "
            "the reference (no reference model kept in memory), stores the per-token log-probs on disk keyed by "
            "the reference weights, tokenizer, data and truncation, and later runs with the same inputs read "
            "them back without any reference forward (docs/reference-cache.md).")),
    }
    for key, (value, default, instead) in unsupported.items():
        if value != default:
            raise ValueError(
                f"`{key}={value!r}` is a TRL DPOTrainer option that alignment's PreferenceTrainer does not "
                f"implement; leave it at {default!r}. {instead}"
            )
    if args.beta is None or not args.beta > 0:
        raise ValueError(f"`beta` must be > 0, got {args.beta}. Typical values are 0.01-0.5 (TRL default 0.1).")
    if not args.loss_type:
        raise ValueError("`loss_type` is empty; name at least one loss, e.g. `sigmoid`.")
    offered = {"beta": args.beta, **args.loss_kwargs}
    if args.label_smoothing:
        offered["label_smoothing"] = args.label_smoothing
    per_loss: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for name in args.loss_type:
        spec = get_preference_loss(name)  # unknown name -> error listing the valid ones
        hparams = {key: value for key, value in offered.items() if key in spec.hparams}
        validate_preference_loss(name, **hparams)  # bad values (beta <= 0, ...) fail here, before any step
        per_loss[name] = hparams
        used.update(hparams)
    unused = sorted(set(offered) - used - {"beta"})
    if unused:
        raise ValueError(
            f"{unused} are set but no selected loss ({args.loss_type}) takes them. Remove them or pick a loss "
            "that uses them."
        )
    return per_loss


def check_padding_free_losses(specs) -> None:
    """`padding_free=True` cannot serve losses that read the reference's hidden states / full outputs."""
    needs_reference = [spec.name for spec in specs if spec.requires_reference_outputs]
    if needs_reference:
        raise ValueError(f"`padding_free=True` cannot serve {needs_reference}: they read the reference's hidden "
                         "states / full outputs in the padded layout. Set `padding_free: false`.")


def check_padding_free(policy, ref_model, *, vision: bool, sharded: bool) -> None:
    """`padding_free=True`: refuse what a packed row cannot carry, then probe that the model isolates sequences.

    ``policy``: the unwrapped policy (a PEFT model or not); ``ref_model``: the reference model or None; ``vision``: a
    vision-language model or image inputs; ``sharded``: FSDP / ZeRO-3 (parameters sharded until training starts).
    """
    if is_peft_model(policy) and policy.active_peft_config.is_prompt_learning:
        raise ValueError("`padding_free=True` does not support prompt-learning PEFT (prefix/prompt tuning): its "
                         "virtual tokens are prepended to every row. Use LoRA or set `padding_free: false`.")
    if vision:
        raise ValueError("`padding_free=True` does not support vision-language models or image inputs. Set "
                         "`padding_free: false`.")
    if sharded:
        logger.warning("padding_free: the start-up probe that packed sequences are isolated is skipped under "
                       "FSDP / ZeRO-3 (parameters are sharded until training starts).")
        return
    target = policy.get_base_model() if is_peft_model(policy) else policy
    # sdpa would run the packed row as one dense [L, L]-masked attention (slower than padding on CPU, see
    # docs/padding-free.md); `packed_sdpa` runs it per sequence, like flash-attention's varlen kernel.
    for module in (target, ref_model):
        if module is not None and module.config._attn_implementation == "sdpa":
            module.set_attn_implementation(register_packed_sdpa())
    check_packing_isolates(target, target.get_output_embeddings().weight.size(0))


def parameters_sharded(trainer) -> bool:
    """FSDP or DeepSpeed ZeRO-3: the model's parameters are sharded across ranks (not readable whole on one)."""
    return trainer.is_fsdp_enabled or (trainer.is_deepspeed_enabled
                                       and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3)
