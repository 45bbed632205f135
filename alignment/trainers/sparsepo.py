"""The reference-model quantities that SparsePO-style losses need, computed for `PreferenceTrainer`.

A loss that requires ``token_kl`` gets the exact per-token KL(π_ref‖π_θ) over the vocabulary; one that requires
``sparse_masks`` gets SparsePO's reward and divergence masks (`alignment.masks`), learned or activation-derived
("mapo"). `ReferenceTokenOutputs` records what the two forward passes already compute (forward hooks on the
backbones: the policy's last hidden state, the reference's hidden states of every layer and, for MaPO, its MLP and
attention outputs averaged over the hidden dimension) and turns them into `PreferenceBatch` fields, only at the
completion positions. The learned mask heads live here too: the trainer adds their parameters to its optimizer
(`mask_weight_decay`), keeps them in sync across ranks and saves them with every checkpoint (`MASK_HEADS_NAME`, a
shared file of the trainer's `process_states`). `SparsePOComponent` is what `PreferenceTrainer` holds: the
configuration checks, and the calls around its forwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import fields
from typing import Any

import torch
import torch.distributed as dist
from accelerate.utils import is_peft_model
from torch import nn

from ..masks import MAPO_ACTIVATIONS, SparseMaskHeads, mapo_mask
from ..token_kl import token_kl

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


# `PreferenceConfig` fields that only SparsePO masks read; setting one without such a loss is an error.
_SPARSE_CONFIG_FIELDS = ("sparsepo_mask", "sparsepo_mask_dropout", "mask_weight_decay", "sparsepo_mapo_activations")


class SparsePOComponent:
    """SparsePO's part of a `PreferenceTrainer`: the start-up checks, the forward captures, the batch fields and the
    mask heads' optimizer hook; the trainer holds one and calls it around its two forwards and in `create_optimizer`.

    Losses that require ``token_kl`` / ``sparse_masks`` (registry `requires`) get them from `ReferenceTokenOutputs`;
    with no such loss (``outputs`` is None) every method is a no-op and `mask_heads` is None.
    """

    def __init__(self, outputs: ReferenceTokenOutputs | None, accelerator: Any):
        self.outputs = outputs
        self.accelerator = accelerator

    @classmethod
    def build(cls, args: Any, specs: list, loss_hparams: dict[str, dict[str, Any]], *, model_config: Any,
              accelerator: Any, sharded: bool, deepspeed: bool, optimizers: tuple | None) -> SparsePOComponent:
        """Check the SparsePO configuration against the selected losses and the launch; build what they need.

        ``sharded``: FSDP or ZeRO-3; ``deepspeed``: any DeepSpeed stage; ``optimizers``: the trainer's `optimizers=`.
        """
        needed = {extra for spec in specs for extra in spec.requires_reference_outputs}
        defaults = {f.name: f.default_factory() if callable(f.default_factory) else f.default
                    for f in fields(type(args)) if f.name in _SPARSE_CONFIG_FIELDS}
        changed = sorted(name for name, default in defaults.items() if getattr(args, name) != default)
        if changed and "sparse_masks" not in needed:
            raise ValueError(f"{changed} are set but no selected loss ({args.loss_type}) uses SparsePO masks; remove "
                             "them or select `loss_type: sparsepo`.")
        if not needed:
            return cls(None, accelerator)
        mask = args.sparsepo_mask if "sparse_masks" in needed else None
        independent = {
            bool(loss_hparams[spec.name].get("independent_masks", spec.hparams.get("independent_masks", False)))
            for spec in specs if "sparse_masks" in spec.requires_reference_outputs
        }
        if len(independent) > 1:
            raise ValueError("The selected losses disagree on `independent_masks`; set it once in `loss_kwargs`.")
        if sharded:
            raise ValueError("SparsePO's token KL reads the full LM-head weights of policy and reference, which FSDP "
                             "and DeepSpeed ZeRO-3 shard; use DDP or ZeRO-2.")
        if mask == "learned" and deepspeed:
            raise ValueError("Learned SparsePO masks are trained outside the DeepSpeed engine; use DDP (or "
                             "`sparsepo_mask: mapo`, which learns nothing).")
        if mask == "learned" and optimizers is not None and optimizers[0] is not None:
            raise ValueError("Learned SparsePO masks must be added to the optimizer the trainer creates; do not pass "
                             "`optimizers=` (set `optim` / `optim_args` instead).")
        outputs = ReferenceTokenOutputs(
            model_config, needs_kl="token_kl" in needed, mask=mask, independent=independent.pop() if independent
            else False, dropout=args.sparsepo_mask_dropout, mapo_activations=tuple(args.sparsepo_mapo_activations),
        )
        if outputs.mask_heads is not None:
            outputs.mask_heads.to(accelerator.device)
        return cls(outputs, accelerator)

    @property
    def mask_heads(self) -> SparseMaskHeads | None:
        return self.outputs.mask_heads if self.outputs is not None else None

    # ------------------------------------------------------------------ the models the hooks attach to
    def _policy_target(self, policy: nn.Module) -> nn.Module:
        """The policy's `PreTrainedModel` (under PEFT, the base model carrying the fused head)."""
        unwrapped = self.accelerator.unwrap_model(policy)
        return unwrapped.get_base_model() if is_peft_model(unwrapped) else unwrapped

    def _reference_target(self, policy: nn.Module, ref_model: nn.Module | None) -> nn.Module:
        """The reference's `PreTrainedModel`: `ref_model`, or the policy itself with adapters off under PEFT."""
        if ref_model is None:
            return self._policy_target(policy)
        return self.accelerator.unwrap_model(ref_model)

    # ------------------------------------------------------------------ one step
    def capture_policy(self, model: nn.Module):
        """Context for the policy forward of ``model`` (the module the step runs, possibly wrapped)."""
        if self.outputs is None:
            return nullcontext()
        return self.outputs.capture_policy(self._policy_target(model).base_model)

    def capture_reference(self, policy: nn.Module, ref_model: nn.Module | None):
        """Context for the reference forward (``ref_model``, or ``policy`` with adapters off)."""
        if self.outputs is None:
            return nullcontext()
        return self.outputs.capture_reference(self._reference_target(policy, ref_model).base_model)

    def batch_fields(self, model: nn.Module, policy: nn.Module, ref_model: nn.Module | None,
                     token_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The `PreferenceBatch` fields of the last captured forwards (`ReferenceTokenOutputs.batch_fields`)."""
        if self.outputs is None:
            return {}
        return self.outputs.batch_fields(token_mask, self._policy_target(model),
                                         self._reference_target(policy, ref_model), training=policy.training)

    # ------------------------------------------------------------------ learned heads
    def add_to_optimizer(self, optimizer: torch.optim.Optimizer, *, weight_decay: float, max_grad_norm: float | None,
                         world_size: int) -> None:
        """Train the learned mask heads with ``optimizer`` (once: a recreated optimizer that has them is left)."""
        heads = self.mask_heads
        if heads is None:
            return
        first = next(heads.parameters())
        if not any(param is first for group in optimizer.param_groups for param in group["params"]):
            self.outputs.add_to_optimizer(optimizer, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                                          world_size=world_size)

