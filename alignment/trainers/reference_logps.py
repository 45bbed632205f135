"""The per-token log-probs of a preference batch under the reference model: one forward, two callers.

`PreferenceTrainer` runs it at every step (unless the reference cache is on); `ReferenceCacheMixin` runs it once
over the data to build the on-disk cache. Both must compute the same numbers, so the choice of the reference module
(``ref_model``, or the policy with its adapters switched off under PEFT: TRL's ``ref`` adapter when one is loaded),
the no-grad / no-checkpointing context and the fused-head call live only here.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from ..packing import PackedSequences, packed_fused_forward


def fused_forward(model, model_kwargs: dict[str, Any], labels: torch.Tensor, packed: PackedSequences | None):
    """The fused-head forward, on the padded batch or (`padding_free`) on its packed row; either way the
    per-token outputs come back ``[2B, T-1]`` (`alignment.packing`)."""
    if packed is None:
        return model(**model_kwargs, labels=labels, fused_lm_head=True)
    return packed_fused_forward(model, model_kwargs, packed)


def reference_token_logps(policy, ref_model, model_kwargs: dict[str, Any], labels: torch.Tensor, *, accelerator,
                          gradient_checkpointing_kwargs: dict | None, packed: PackedSequences | None = None,
                          module=None) -> torch.Tensor:
    """``[2B, T-1]`` per-token log-probs of ``labels`` under the reference, without gradient.

    The reference is ``ref_model``, or, when there is none, the policy with its PEFT adapters off. ``module`` is the
    callable that runs it (default: that model; the reference cache passes a DeepSpeed inference engine wrapping the
    policy). ``model_kwargs`` are the policy's forward arguments (`preference_batch.model_inputs`); the MoE router
    request is dropped (the reference's auxiliary loss is never used). Positions are those of the fused head: a
    prompt-learning PEFT policy's virtual tokens are still at the front, for the caller to cut (``[:, -T:]``).
    """
    ref_kwargs = {key: value for key, value in model_kwargs.items() if key != "output_router_logits"}
    if module is None:
        module = ref_model if ref_model is not None else policy
    adapter = nullcontext()
    if ref_model is None and is_peft_model(policy):
        unwrapped = accelerator.unwrap_model(policy)
        adapter = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
    with torch.no_grad(), disable_gradient_checkpointing(policy, gradient_checkpointing_kwargs), adapter:
        return fused_forward(module, ref_kwargs, labels, packed).log_probs
