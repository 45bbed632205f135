"""The reference-model quantities that SparsePO-style losses need, computed for `PreferenceTrainer`.

A loss that requires ``token_kl`` gets the exact per-token KL(π_ref‖π_θ) over the vocabulary; one that requires
``sparse_masks`` gets SparsePO's reward and divergence masks (`alignment.masks`), learned or activation-derived
("mapo"). `ReferenceTokenOutputs` records what the two forward passes already compute (forward hooks on the
backbones: the policy's last hidden state, the reference's hidden states of every layer and, for MaPO, its MLP and
attention outputs averaged over the hidden dimension) and turns them into `PreferenceBatch` fields, only at the
completion positions. The learned mask heads live here too: the trainer adds their parameters to its optimizer
(`mask_weight_decay`), keeps them in sync across ranks and saves them with every checkpoint (`MASK_HEADS_NAME`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..masks import MAPO_ACTIVATIONS, SparseMaskHeads, mapo_mask
from ..token_kl import token_kl
from .finite_guard import check_finite_state

MASK_HEADS_NAME = "sparsepo_mask_heads.pt"
# Module names (last component) taken as a decoder layer's MLP / attention block for the MaPO activations.
_MLP_NAMES = ("mlp", "feed_forward", "ffn")
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
# Config fields by which some architectures scale or soft-cap the logits; `token_kl` handles plain linear heads only.
_HEAD_SCALING_FIELDS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                        "logits_scaling")


def _layer_blocks(backbone: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    """The outermost sub-modules of ``backbone`` whose own name is one of ``names`` (one per decoder layer)."""
    found: list[tuple[str, nn.Module]] = []
    for qualified, module in backbone.named_modules():
        if qualified.rsplit(".", 1)[-1] in names and not any(qualified.startswith(f"{q}.") for q, _ in found):
            found.append((qualified, module))
    return [module for _, module in found]


def _head_params(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ValueError(f"{type(model).__name__} has no linear output head; SparsePO's token KL needs one.")
    if hasattr(head, "lora_A"):
        raise ValueError("The LM head carries LoRA adapters; SparsePO's token KL uses the head's base weight for the "
                         "policy too. Leave `lm_head` out of the PEFT `target_modules`.")
    return head.weight, getattr(head, "bias", None)


class ReferenceTokenOutputs:
    """Records backbone outputs during the policy and reference forwards and builds the SparsePO batch fields.

    Args:
        config: the (policy = reference) model config.
        needs_kl: build ``chosen_token_kl`` / ``rejected_token_kl``.
        mask: ``None`` (no masks), ``"learned"`` or ``"mapo"``.
        independent: two learned mask heads (``m^u``, ``m^d``) instead of one shared.
        dropout: dropout of the learned heads.
        mapo_activations: the activation kinds MaPO averages (`MAPO_ACTIVATIONS`).
    """

    def __init__(self, config: Any, *, needs_kl: bool, mask: str | None, independent: bool = False,
                 dropout: float = 0.01, mapo_activations: tuple[str, ...] = MAPO_ACTIVATIONS):
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        if needs_kl:
            for name in _HEAD_SCALING_FIELDS:
                value = getattr(text_config, name, None)
                if value is not None and value != 1.0:
                    raise ValueError(f"The model config sets `{name}={value}`; the exact token KL of SparsePO is "
                                     "implemented for unscaled linear LM heads only.")
        if mask == "mapo" and independent:
            raise ValueError("`independent_masks: true` needs learned masks: MaPO derives one mask from the reference "
                             "activations and uses it for both terms. Set `sparsepo_mask: learned` or drop "
                             "`independent_masks`.")
        self.needs_kl = needs_kl
        self.mask = mask
        self.mapo_activations = tuple(mapo_activations)
        self.mask_heads: SparseMaskHeads | None = None
        if mask == "learned":
            eps = next((getattr(text_config, name) for name in ("layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps")
                        if getattr(text_config, name, None) is not None), 1e-5)
            self.mask_heads = SparseMaskHeads(text_config.hidden_size, text_config.num_hidden_layers,
                                              independent=independent, dropout=dropout, eps=eps)
        self._policy_hidden: torch.Tensor | None = None
        self._reference: dict[str, Any] = {}

    @property
    def needs_hidden_states(self) -> bool:
        return self.mask == "learned" or (self.mask == "mapo" and "resid" in self.mapo_activations)

    # ------------------------------------------------------------------ capture
    @contextmanager
    def capture_policy(self, backbone: nn.Module) -> Iterator[None]:
        """Keep the policy's last hidden state (with its graph) from the forward run inside the block."""
        if not self.needs_kl:
            yield
            return

        def keep(module, args, output):
            self._policy_hidden = output.last_hidden_state

        handle = backbone.register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def capture_reference(self, backbone: nn.Module) -> Iterator[None]:
        """Keep the reference's hidden states (and MaPO activations) from the forward run inside the block."""
        record: dict[str, Any] = {"mlp": [], "attn": []}
        handles = []

        def ask_hidden_states(module, args, kwargs):
            kwargs["output_hidden_states"] = True
            return args, kwargs

        def keep_output(module, args, output):
            record["output"] = output

        def keep_mean(kind):
            def hook(module, args, output):
                tensor = output[0] if isinstance(output, tuple) else output
                record[kind].append(tensor.detach().float().mean(-1))  # only the per-token mean is ever used
            return hook

        if self.needs_hidden_states:
            handles.append(backbone.register_forward_pre_hook(ask_hidden_states, with_kwargs=True))
        handles.append(backbone.register_forward_hook(keep_output))
        if self.mask == "mapo":
            for kind, names in (("mlp", _MLP_NAMES), ("attn", _ATTN_NAMES)):
                if kind in self.mapo_activations:
                    blocks = _layer_blocks(backbone, names)
                    if not blocks:
                        raise ValueError(f"No {kind} blocks (modules named {names}) in {type(backbone).__name__}; "
                                         f"remove {kind!r} from `sparsepo_mapo_activations`.")
                    handles.extend(block.register_forward_hook(keep_mean(kind)) for block in blocks)
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        self._reference = record

    # ------------------------------------------------------------------ batch fields
    def batch_fields(self, token_mask: torch.Tensor, policy_model: nn.Module, reference_model: nn.Module,
                     *, training: bool) -> dict[str, torch.Tensor]:
        """``PreferenceBatch`` fields for the last captured forwards; ``token_mask``: ``[2B, S]`` (chosen; rejected).

        Position ``s`` of every per-position tensor here is the hidden state that predicts completion token ``s``
        (``[:, :-1]`` of the sequence, then its last ``S`` positions, as the fused log-probs).
        """
        reference, self._reference = self._reference, {}
        policy_hidden, self._policy_hidden = self._policy_hidden, None
        output = reference.get("output")
        if output is None:
            raise RuntimeError("No reference forward was captured; call `capture_reference` around it.")
        seq_len = token_mask.size(1)
        on = token_mask > 0

        def align(tensor: torch.Tensor) -> torch.Tensor:
            return tensor[:, :-1][:, -seq_len:]

        fields: dict[str, torch.Tensor] = {}
        ref_last = align(output.last_hidden_state)
        if self.needs_kl:
            if policy_hidden is None:
                raise RuntimeError("No policy forward was captured; call `capture_policy` around it.")
            weight, bias = _head_params(policy_model)
            ref_weight, ref_bias = _head_params(reference_model)
            kl = token_kl(align(policy_hidden)[on], weight, bias, ref_last[on], ref_weight, ref_bias)
            per_token = torch.zeros(token_mask.shape, dtype=kl.dtype, device=kl.device).masked_scatter(on, kl)
            fields["chosen_token_kl"], fields["rejected_token_kl"] = per_token.chunk(2, dim=0)
        if self.mask is None:
            return fields

        if self.mask == "learned":
            self.mask_heads.train(training)
            layers = output.hidden_states[1:]  # every layer's output; the embeddings are not an input (official)
            reward, kl_mask = self.mask_heads([align(hidden)[on] for hidden in layers])
            common = kl_mask is reward
            zeros = torch.zeros(token_mask.shape, dtype=reward.dtype, device=reward.device)
            reward = zeros.masked_scatter(on, reward)
            kl_mask = reward if common else zeros.masked_scatter(on, kl_mask)
        else:
            activations = {}
            for kind in self.mapo_activations:
                if kind == "resid":
                    activations[kind] = [align(hidden).float().mean(-1) for hidden in output.hidden_states]
                elif kind == "logits":
                    # the mean over the vocabulary of h·Wᵀ + b, without forming the logits
                    ref_weight, ref_bias = _head_params(reference_model)
                    mean_logits = ref_last.float() @ ref_weight.float().mean(0)
                    if ref_bias is not None:
                        mean_logits = mean_logits + ref_bias.float().mean()
                    activations[kind] = [mean_logits]
                else:
                    activations[kind] = [align(tensor) for tensor in reference[kind]]
            reward = kl_mask = mapo_mask(activations, token_mask)
        chosen_reward, rejected_reward = reward.chunk(2, dim=0)
        chosen_kl, rejected_kl = (chosen_reward, rejected_reward) if kl_mask is reward else kl_mask.chunk(2, dim=0)
        fields.update(chosen_reward_mask=chosen_reward, rejected_reward_mask=rejected_reward,
                      chosen_kl_mask=chosen_kl, rejected_kl_mask=rejected_kl)
        return fields

    # ------------------------------------------------------------------ learned heads: optimisation and checkpoints
    def add_to_optimizer(self, optimizer: torch.optim.Optimizer, *, weight_decay: float, max_grad_norm: float | None,
                         world_size: int) -> None:
        """Train the mask heads with ``optimizer`` (own weight decay); average their gradients over ranks and clip
        them (norm ``max_grad_norm``, on their own) right before every step, as DDP and the Trainer do for the model,
        and clear them after it."""
        params = [p for p in self.mask_heads.parameters() if p.requires_grad]
        optimizer.add_param_group({"params": params, "weight_decay": weight_decay})

        def before_step(opt, args, kwargs):
            for param in params:
                if param.grad is None:  # keep the collective calls identical on every rank
                    param.grad = torch.zeros_like(param)
            if world_size > 1 and dist.is_available() and dist.is_initialized():
                for param in params:
                    dist.all_reduce(param.grad)
                    param.grad.div_(world_size)
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)

        def after_step(opt, args, kwargs):
            # The Trainer zeroes the model's gradients only (`model.zero_grad()`); without this the heads' gradients
            # would accumulate over every step of the run.
            for param in params:
                param.grad = None

        optimizer.register_step_pre_hook(before_step)
        optimizer.register_step_post_hook(after_step)

    def save_mask_heads(self, directory: str) -> None:
        torch.save(self.mask_heads.state_dict(), os.path.join(directory, MASK_HEADS_NAME))

    def load_mask_heads(self, directory: str) -> None:
        path = os.path.join(directory, MASK_HEADS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: the checkpoint has no SparsePO mask heads (saved by another "
                                    "loss_type or `sparsepo_mask`). Resume from a checkpoint of the same recipe.")
        device = next(self.mask_heads.parameters()).device
        state = torch.load(path, map_location=device, weights_only=True)
        check_finite_state(state, source=path)
        self.mask_heads.load_state_dict(state)
