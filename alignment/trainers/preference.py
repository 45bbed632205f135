"""`PreferenceTrainer`: TRL's DPOTrainer with its loss replaced by the `alignment.losses` registry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import add_fused_lm_head, use_adapter

from ..losses.turns import assistant_turn_markers, completion_turn_ids
from ..packing import (PackedSequences, check_packing_isolates, pack_sequences, packed_fused_forward,
                       register_packed_sdpa)
from ..losses import (
    LossState,
    PreferenceBatch,
    compute_preference_loss,
    compute_token_weights,
    get_preference_loss,
    validate_preference_loss,
    validate_token_weighting,
)
from .domain_reweighting import DomainReweightingMixin
from .hooks import TrainerHooks
from .process_state import StateGroup
from .reference_cache import ReferenceCacheMixin
from .reference_free import check_reference_free, without_reference_model
from .sparsepo import MASK_HEADS_NAME, ReferenceTokenOutputs
from .validation import check_chat_template, check_preference_dataset, fill_unused_chosen

# Per-example columns that TRL would drop and the losses may use.
EXTRA_COLUMNS = ("margin", "weight", "domain", "empty_trace", "preference_prob")
_NUMERIC_COLUMNS = tuple(column for column in EXTRA_COLUMNS if column != "domain")  # -> float [B]; domain -> ids
_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", *EXTRA_COLUMNS}
# The fused-LM-head outputs TRL's DPOTrainer requests (its `__init__`), before any a selected loss adds.
_TRL_FUSED_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")
LOSS_STATE_NAME = "loss_state.pt"
logger = logging.getLogger(__name__)


@dataclass
class ExtraColumnsCollator:
    """Wraps TRL's preference collator and passes `margin`, `weight` and `domain` through as ``[B]`` tensors.

    Domains are strings in datasets; they become integer ids here, in order of first appearance per trainer
    (`domain_names` keeps the mapping, shared with the trainer for logging).
    """

    base: Callable[[list[dict[str, Any]]], dict[str, Any]]
    domain_names: list[str]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(examples)
        first = examples[0]
        for column in _NUMERIC_COLUMNS:
            if column in first:
                batch[column] = torch.tensor([float(example[column]) for example in examples], dtype=torch.float32)
        if "domain" in first:
            batch["domain"] = torch.tensor([self._domain_id(example["domain"]) for example in examples])
        return batch

    def _domain_id(self, name: Any) -> int:
        name = str(name)
        if name not in self.domain_names:
            self.domain_names.append(name)
        return self.domain_names.index(name)


class PreferenceTrainer(TrainerHooks, ReferenceCacheMixin, DomainReweightingMixin, DPOTrainer):
    """A `trl.DPOTrainer` whose loss comes from `alignment.losses` (selected by `args.loss_type`).

    Differences from the parent, all deliberate:
    - per-token log-probs of policy and reference are computed once per step and handed to the loss as a
      `PreferenceBatch`, so sequence- and token-level losses share one code path;
    - the dataset columns `margin`, `weight` and `domain` are kept and reach the loss;
    - configuration is checked before training: loss names and hyper-parameters, required columns, empty
      completions, chat template; TRL options the registry replaces are rejected instead of ignored;
    - stateful losses (e.g. `beta_dpo`) get one `LossState` each, global across ranks (``accelerator.gather``), saved
      in every checkpoint (`loss_state.pt`, or `loss_state_{rank}.pt` with several processes) and restored on resume
      (registered with `self.process_states`, `TrainerHooks`);
    - per-token model outputs a loss requires (e.g. `log_sum_sq_probs` for `wpo`) are requested from the fused head;
    - `args.token_weighting` (e.g. `tldr`, `entropy`) weights every completion token of policy and reference sums,
      whatever the loss (`PreferenceBatch.chosen_token_weight` / `rejected_token_weight`);
    - `args.domain_reweighting` (e.g. `doremi`) updates per-domain weights online from the per-example losses and
      applies them by sampling or by loss weights (`DomainReweightingMixin`, ``self.domains``).
    """

    _tag_names = ["trl", "dpo", "alignment"]
    _name = "Preference"
    _domain_gradients_supported = True  # DoGE: `domains.record` below gets the per-example losses with their graph

    def __init__(self, model, ref_model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, **kwargs):
        if args is None:
            raise ValueError("PreferenceTrainer needs `args` (an `alignment.PreferenceConfig`).")
        self._loss_hparams = self._resolve_loss_hparams(args)
        self._token_weighting = getattr(args, "token_weighting", None)
        self._token_weighting_kwargs = dict(getattr(args, "token_weighting_kwargs", None) or {})
        if self._token_weighting is not None:
            # unknown name, unknown hyper-parameter or bad value -> error now, before any step
            validate_token_weighting(self._token_weighting, **self._token_weighting_kwargs)
        elif self._token_weighting_kwargs:
            raise ValueError(f"`token_weighting_kwargs={self._token_weighting_kwargs}` is set but `token_weighting` is "
                             "not; name a weighting (e.g. `tldr`) or remove the kwargs.")
        specs = [get_preference_loss(name) for name in args.loss_type]
        reading_chosen = [spec.name for spec in specs if "chosen" in spec.sides]
        train_dataset = fill_unused_chosen(train_dataset, "train", reading_chosen)
        if isinstance(eval_dataset, dict):
            eval_dataset = {key: fill_unused_chosen(value, key, reading_chosen) for key, value in eval_dataset.items()}
        else:
            eval_dataset = fill_unused_chosen(eval_dataset, "eval", reading_chosen)
        required = tuple(sorted({extra for spec in specs for extra in spec.requires_columns}))
        self._model_outputs = tuple(sorted({extra for spec in specs for extra in spec.requires_model_outputs}))
        check_preference_dataset(train_dataset, "train", required)
        eval_sets = eval_dataset.items() if isinstance(eval_dataset, dict) else [("eval", eval_dataset)]
        for name, dataset in eval_sets:
            if dataset is not None:
                check_preference_dataset(dataset, name, required)
        if processing_class is not None:
            check_chat_template(processing_class, train_dataset, getattr(model, "name_or_path", str(model)))

        self._padding_free = bool(args.padding_free)
        if self._padding_free:
            needs_reference = [spec.name for spec in specs if spec.requires_reference_outputs]
            if needs_reference:
                raise ValueError(f"`padding_free=True` cannot serve {needs_reference}: they read the reference's hidden "
                                 "states / full outputs in the padded layout. Set `padding_free: false`.")
        # TRL 1.16 would warn that padding_free is disabled and reset it; we implement it (`_fused_forward`), so TRL
        # sees False and the user's `args` get their value back.
        args.padding_free = False
        # Reference-free losses only (simpo, cpo, orpo, sft): no reference model is built, loaded or run.
        self._reference_free = check_reference_free(args, specs, ref_model)
        try:
            with without_reference_model(self._reference_free, policy_from_path=isinstance(model, str)):
                super().__init__(model=model, ref_model=ref_model, args=args, data_collator=data_collator,
                                 train_dataset=train_dataset, eval_dataset=eval_dataset,
                                 processing_class=processing_class, **kwargs)
        finally:
            args.padding_free = self._padding_free
        self.kept_columns.extend(EXTRA_COLUMNS)
        # Domain reweighting fixes the ids (sorted names) before any batch; the collator appends unseen (eval) ones.
        self.domain_names: list[str] = list(self.domain_weights.domain_names) if self.domain_weights else []
        self.data_collator = ExtraColumnsCollator(self.data_collator, self.domain_names)
        # Turn-level losses (dmpo) need each completion token's assistant-turn index; the markers come from the chat
        # template, derived once here so a template they cannot be found in fails before training.
        self._turn_markers = None
        if any(spec.requires_token_annotations for spec in specs):
            tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
            self._turn_markers = assistant_turn_markers(tokenizer)
        if self._model_outputs:
            # TRL's __init__ patched the policy with a fused head computing `_TRL_FUSED_OUTPUTS` only (it adds
            # `log_sum_sq_probs` only under `use_weighting`, which we reject). Patch it again, on the same module as
            # TRL (the base model under PEFT), with the extra outputs: the new forward handles `fused_lm_head=True`
            # itself and delegates every other call to the previous (TRL-patched) forward, hence to the original one.
            target = self.model.get_base_model() if is_peft_model(self.model) else self.model
            add_fused_lm_head(target, outputs=_TRL_FUSED_OUTPUTS + self._model_outputs)
        self._loss_states: dict[str, LossState] = {}
        for spec in specs:
            if spec.stateful and spec.name not in self._loss_states:
                generator = torch.Generator().manual_seed(int(args.seed) + int(args.process_index))
                self._loss_states[spec.name] = LossState(gather=self.accelerator.gather, generator=generator)
        if self._loss_states:
            self.process_states.register(
                LOSS_STATE_NAME, StateGroup(self._loss_states, "loss"),
                missing_hint=f"the checkpoint has no state for the stateful loss(es) {sorted(self._loss_states)} "
                             "(saved with `save_only_model`, or by another loss_type). Resume from a full checkpoint.",
                # via the public method, so that code wrapping `load_loss_state` sees every resume
                restore=lambda checkpoint: self.load_loss_state(checkpoint),
            )
        self._sparse = self._init_sparse_outputs(args, specs, kwargs.get("optimizers"))
        if self._sparse is not None and self._sparse.mask_heads is not None:
            # Not part of the model: saved beside its weights, in checkpoints and the final save.
            self.process_states.register(
                MASK_HEADS_NAME, self._sparse.mask_heads, shared=True,
                missing_hint="the checkpoint has no SparsePO mask heads (saved by another loss_type or "
                             "`sparsepo_mask`). Resume from a checkpoint of the same recipe.",
            )
        if self._padding_free:
            self._check_padding_free()

    # ------------------------------------------------------------------ configuration
    @staticmethod
    def _resolve_loss_hparams(args) -> dict[str, dict[str, Any]]:
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

    def _check_padding_free(self) -> None:
        """`padding_free=True`: refuse what a packed row cannot carry, then probe that the model isolates sequences."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if is_peft_model(unwrapped) and unwrapped.active_peft_config.is_prompt_learning:
            raise ValueError("`padding_free=True` does not support prompt-learning PEFT (prefix/prompt tuning): its "
                             "virtual tokens are prepended to every row. Use LoRA or set `padding_free: false`.")
        if self._is_vlm or self._is_vision_dataset:
            raise ValueError("`padding_free=True` does not support vision-language models or image inputs. Set "
                             "`padding_free: false`.")
        if self.is_fsdp_enabled or (self.is_deepspeed_enabled
                                    and self.accelerator.state.deepspeed_plugin.zero_stage == 3):
            logger.warning("padding_free: the start-up probe that packed sequences are isolated is skipped under "
                           "FSDP / ZeRO-3 (parameters are sharded until training starts).")
            return
        target = unwrapped.get_base_model() if is_peft_model(unwrapped) else unwrapped
        # sdpa would run the packed row as one dense [L, L]-masked attention (slower than padding on CPU, see
        # docs/padding-free.md); `packed_sdpa` runs it per sequence, like flash-attention's varlen kernel.
        for module in (target, self.ref_model):
            if module is not None and module.config._attn_implementation == "sdpa":
                module.set_attn_implementation(register_packed_sdpa())
        check_packing_isolates(target, target.get_output_embeddings().weight.size(0))

    # ------------------------------------------------------------------ loss
    @staticmethod
    def _fused_forward(model, model_kwargs: dict[str, Any], labels: torch.Tensor, packed: PackedSequences | None):
        """The fused-head forward, on the padded batch or (`padding_free`) on its packed row; either way the
        per-token outputs come back ``[2B, T-1]`` (`alignment.packing`)."""
        if packed is None:
            return model(**model_kwargs, labels=labels, fused_lm_head=True)
        return packed_fused_forward(model, model_kwargs, packed)

    def _reference_token_logps(self, model_kwargs: dict[str, Any], labels: torch.Tensor,
                               packed: PackedSequences | None = None) -> torch.Tensor:
        """Per-token log-probs of the reference: `ref_model`, or the policy with adapters off under PEFT, or the
        on-disk cache when `args.reference_cache_dir` is set (`ReferenceCacheMixin`: no reference forward at all)."""
        if self.reference_cache_enabled:
            return self._cached_reference_token_logps(labels)
        ref_kwargs = {k: v for k, v in model_kwargs.items() if k != "output_router_logits"}
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if self.ref_model is None and is_peft_model(self.model):
                unwrapped = self.accelerator.unwrap_model(self.model)
                with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                    return self._fused_forward(self.model, ref_kwargs, labels, packed).log_probs
            return self._fused_forward(self.ref_model, ref_kwargs, labels, packed).log_probs

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        completion_mask = inputs["completion_mask"]
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        packed = pack_sequences(inputs["input_ids"], inputs["attention_mask"], labels) if self._padding_free else None
        with self._capture_sparse_policy(model):
            outputs = self._fused_forward(model, model_kwargs, labels, packed)

        # Position t of the fused outputs scores token t+1, so the completion mask is shifted by one.
        token_mask = completion_mask[:, 1:]
        seq_len = token_mask.size(1)
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens.
        policy_logps = outputs.log_probs[:, -seq_len:]
        ref_chosen_logps = ref_rejected_logps = None
        if not self._reference_free:
            with self._capture_sparse_reference():
                ref_logps = self._reference_token_logps(model_kwargs, labels, packed)[:, -seq_len:]
            ref_chosen_logps, ref_rejected_logps = ref_logps.chunk(2, dim=0)
        mask = token_mask.to(policy_logps.dtype)

        chosen_logps, rejected_logps = policy_logps.chunk(2, dim=0)  # the collator stacks [chosen; rejected]
        chosen_mask, rejected_mask = mask.chunk(2, dim=0)
        batch = PreferenceBatch(
            chosen_logps=chosen_logps,
            rejected_logps=rejected_logps,
            ref_chosen_logps=ref_chosen_logps,
            ref_rejected_logps=ref_rejected_logps,
            chosen_mask=chosen_mask,
            rejected_mask=rejected_mask,
            margin=inputs.get("margin"),
            weight=inputs.get("weight"),
            domain=inputs.get("domain"),
            empty_trace=inputs.get("empty_trace"),
            preference_prob=inputs.get("preference_prob"),
            **self._turn_ids(inputs, token_mask),
            **self._token_outputs(outputs, seq_len),
            **self._token_weights(mode, outputs, policy_logps, mask, seq_len),
            **self._sparse_fields(model, token_mask),
        )

        loss = 0.0
        example_losses = 0.0  # [B] total per-example loss, for the per-domain losses of domain reweighting
        loss_metrics: dict[str, torch.Tensor] = {}
        for state in self._loss_states.values():
            state.training = self.model.training
        for name, loss_weight in zip(self.loss_types, self.loss_weights, strict=True):
            per_example, metrics = compute_preference_loss(
                name, batch, state=self._loss_states.get(name), **self._loss_hparams[name]
            )
            loss = loss + self._domain_weighted_mean(batch.domain, per_example) * loss_weight
            example_losses = example_losses + per_example * loss_weight  # with its graph, for DoGE's gradients
            prefix = "" if len(self.loss_types) == 1 else f"{name}/"
            loss_metrics.update({f"{prefix}{key}": value for key, value in metrics.items()})
        self.domains.record(batch.domain, example_losses)

        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._metrics[mode]["aux_loss"].append(self._gather_mean(outputs.aux_loss))

        self._log_step_metrics(mode, inputs, outputs, batch, token_mask, seq_len, loss_metrics)

        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
        return (loss, outputs) if return_outputs else loss

    def _domain_weighted_mean(self, domain_ids, per_example: torch.Tensor) -> torch.Tensor:
        """Mean of ``[B]`` per-example losses, each scaled by its domain's upweight factor when upweighting (the plain
        mean otherwise); ``domain_upweight_normalize`` divides by the sum of the factors instead of B (DoReMi's proxy
        loss ``Σ α̃ ℓ / Σ α̃``) rather than the unbiased scalarisation of "Upsample or Upweight?"."""
        weighted = self.domains.apply(domain_ids, per_example)
        normalizer = self.domains.normalizer(domain_ids, torch.ones_like(per_example))
        return weighted.mean() if normalizer is None else weighted.sum() / normalizer.clamp(min=1e-12)

    def _turn_ids(self, inputs, token_mask) -> dict[str, torch.Tensor]:
        """``chosen_turn_ids`` / ``rejected_turn_ids`` ``[B, T]`` when a selected loss requires them, else nothing."""
        if self._turn_markers is None:
            return {}
        # token_mask is the completion mask shifted by one (position t scores token t+1), so shift the ids the same way
        turn_ids = completion_turn_ids(inputs["input_ids"][:, 1:], token_mask, self._turn_markers)
        chosen, rejected = turn_ids.chunk(2, dim=0)
        return {"chosen_turn_ids": chosen, "rejected_turn_ids": rejected}

    def _token_outputs(self, outputs, seq_len: int) -> dict[str, torch.Tensor]:
        """The per-token model outputs the selected losses require, as PreferenceBatch fields."""
        fields = {}
        if "log_sum_sq_probs" in self._model_outputs:
            if outputs.log_sum_sq_probs is None:
                raise RuntimeError("The fused LM head returned no `log_sum_sq_probs`; was the model re-patched?")
            chosen, rejected = outputs.log_sum_sq_probs[:, -seq_len:].chunk(2, dim=0)
            fields.update(chosen_log_sum_sq_probs=chosen, rejected_log_sum_sq_probs=rejected)
        return fields

    def _token_weights(self, mode, outputs, policy_logps, mask, seq_len: int) -> dict[str, torch.Tensor]:
        """`args.token_weighting`'s ``[B, T]`` weights of chosen and rejected tokens, as PreferenceBatch fields.

        Computed from the policy's per-token log-probs (and entropy) of each side; the batch applies the same weights
        to the reference log-probs. Logs `token_weight/mean_chosen` and `token_weight/mean_rejected` (mean weight
        over completion tokens). Under a token weighting the logged `rewards/*` and `logps/*` are computed from the
        weighted sums the loss sees, so they are not comparable with an unweighted run's.
        """
        if self._token_weighting is None:
            return {}
        entropy = outputs.entropy[:, -seq_len:] if outputs.entropy is not None else None
        weights = compute_token_weights(self._token_weighting, policy_logps, mask, entropy=entropy,
                                        **self._token_weighting_kwargs)
        fields = {}
        for side, side_weights, side_mask in zip(("chosen", "rejected"), weights.chunk(2, dim=0), mask.chunk(2, dim=0)):
            fields[f"{side}_token_weight"] = side_weights
            self._metrics[mode][f"token_weight/mean_{side}"].append(
                self._gather_ratio((side_weights * side_mask).sum(), side_mask.sum())
            )
        return fields

    # ------------------------------------------------------------------ SparsePO: reference outputs and mask heads
    # Losses that require `token_kl` / `sparse_masks` (registry `requires`) get them from `ReferenceTokenOutputs`
    # (alignment/trainers/sparsepo.py); everything here is a no-op otherwise.
    _SPARSE_FIELDS = ("sparsepo_mask", "sparsepo_mask_dropout", "mask_weight_decay", "sparsepo_mapo_activations")

    def _init_sparse_outputs(self, args, specs, optimizers) -> ReferenceTokenOutputs | None:
        """Check the SparsePO configuration against the selected losses and the launch; build what they need."""
        needed = {extra for spec in specs for extra in spec.requires_reference_outputs}
        defaults = {f.name: f.default_factory() if callable(f.default_factory) else f.default
                    for f in fields(type(args)) if f.name in self._SPARSE_FIELDS}
        changed = sorted(name for name, default in defaults.items() if getattr(args, name) != default)
        if changed and "sparse_masks" not in needed:
            raise ValueError(f"{changed} are set but no selected loss ({args.loss_type}) uses SparsePO masks; remove "
                             "them or select `loss_type: sparsepo`.")
        if not needed:
            return None
        mask = args.sparsepo_mask if "sparse_masks" in needed else None
        independent = {
            bool(self._loss_hparams[spec.name].get("independent_masks", spec.hparams.get("independent_masks", False)))
            for spec in specs if "sparse_masks" in spec.requires_reference_outputs
        }
        if len(independent) > 1:
            raise ValueError("The selected losses disagree on `independent_masks`; set it once in `loss_kwargs`.")
        if self.is_fsdp_enabled or (self.is_deepspeed_enabled
                                    and self.accelerator.state.deepspeed_plugin.zero_stage == 3):
            raise ValueError("SparsePO's token KL reads the full LM-head weights of policy and reference, which FSDP "
                             "and DeepSpeed ZeRO-3 shard; use DDP or ZeRO-2.")
        if mask == "learned" and self.is_deepspeed_enabled:
            raise ValueError("Learned SparsePO masks are trained outside the DeepSpeed engine; use DDP (or "
                             "`sparsepo_mask: mapo`, which learns nothing).")
        if mask == "learned" and optimizers is not None and optimizers[0] is not None:
            raise ValueError("Learned SparsePO masks must be added to the optimizer the trainer creates; do not pass "
                             "`optimizers=` (set `optim` / `optim_args` instead).")
        sparse = ReferenceTokenOutputs(
            self.model.config, needs_kl="token_kl" in needed, mask=mask, independent=independent.pop() if independent
            else False, dropout=args.sparsepo_mask_dropout, mapo_activations=tuple(args.sparsepo_mapo_activations),
        )
        if sparse.mask_heads is not None:
            sparse.mask_heads.to(self.accelerator.device)
        return sparse

    def _sparse_policy_target(self, model=None):
        """The policy's `PreTrainedModel` (under PEFT, the base model carrying the fused head)."""
        unwrapped = self.accelerator.unwrap_model(model if model is not None else self.model)
        return unwrapped.get_base_model() if is_peft_model(unwrapped) else unwrapped

    def _sparse_reference_target(self):
        """The reference's `PreTrainedModel`: `ref_model`, or the policy itself with adapters off under PEFT."""
        if self.ref_model is None:
            return self._sparse_policy_target()
        return self.accelerator.unwrap_model(self.ref_model)

    def _capture_sparse_policy(self, model):
        if self._sparse is None:
            return nullcontext()
        return self._sparse.capture_policy(self._sparse_policy_target(model).base_model)

    def _capture_sparse_reference(self):
        if self._sparse is None:
            return nullcontext()
        return self._sparse.capture_reference(self._sparse_reference_target().base_model)

    def _sparse_fields(self, model, token_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._sparse is None:
            return {}
        return self._sparse.batch_fields(token_mask, self._sparse_policy_target(model),
                                         self._sparse_reference_target(), training=self.model.training)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        heads = self._sparse.mask_heads if self._sparse is not None else None
        if heads is not None:
            first = next(heads.parameters())
            if not any(param is first for group in optimizer.param_groups for param in group["params"]):
                self._sparse.add_to_optimizer(optimizer, weight_decay=self.args.mask_weight_decay,
                                              max_grad_norm=self.args.max_grad_norm,
                                              world_size=self.args.world_size)
        return optimizer

    # ------------------------------------------------------------------ loss state in checkpoints
    def load_loss_state(self, checkpoint: str) -> None:
        """Restore every stateful loss's `LossState` from ``checkpoint`` (this process's `loss_state` file)."""
        self.process_states.load_file(self.args, checkpoint, LOSS_STATE_NAME)

    # ------------------------------------------------------------------ metrics
    def _gather_mean(self, value: torch.Tensor) -> float:
        value = value.detach().float()
        return self.accelerator.gather_for_metrics(value.reshape(-1)).mean().item()

    def _gather_std(self, value: torch.Tensor) -> float:
        """Population standard deviation over the global batch (0 for a single example)."""
        value = self.accelerator.gather_for_metrics(value.detach().float().reshape(-1))
        return value.std(unbiased=False).item()

    def _gather_ratio(self, numerator: torch.Tensor, denominator: torch.Tensor) -> float:
        num = self.accelerator.gather_for_metrics(numerator.detach().float().reshape(1)).sum()
        den = self.accelerator.gather_for_metrics(denominator.detach().float().reshape(1)).sum()
        return (num / den).item() if den > 0 else 0.0

    def _log_step_metrics(self, mode, inputs, outputs, batch, token_mask, seq_len, loss_metrics) -> None:
        """TRL's DPO metrics (same names), plus whatever the loss returned."""
        metrics = self._metrics[mode]
        flat_mask = token_mask.bool()
        entropy = outputs.entropy[:, -seq_len:].detach()
        metrics["entropy"].append(self._gather_ratio((entropy * flat_mask).sum(), flat_mask.sum()))
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]

        chosen_mask, rejected_mask = flat_mask.chunk(2, dim=0)
        chosen_logits, rejected_logits = outputs.mean_logits[:, -seq_len:].detach().chunk(2, dim=0)
        metrics["logits/chosen"].append(self._gather_ratio(chosen_logits[chosen_mask].sum(), chosen_mask.sum()))
        metrics["logits/rejected"].append(
            self._gather_ratio(rejected_logits[rejected_mask].sum(), rejected_mask.sum())
        )
        chosen_top1, _ = outputs.is_top1[:, -seq_len:].chunk(2, dim=0)
        metrics["mean_token_accuracy"].append(
            self._gather_ratio((chosen_top1 & chosen_mask).sum(), chosen_mask.sum())
        )

        # Reference-free: the policy log-likelihood is the implicit reward (as TRL's CPO/ORPO trainers log it).
        free = self._reference_free
        chosen_rewards = self.beta * (batch.chosen_logps_sum if free else batch.chosen_logratios).detach()
        rejected_rewards = self.beta * (batch.rejected_logps_sum if free else batch.rejected_logratios).detach()
        metrics["rewards/chosen"].append(self._gather_mean(chosen_rewards))
        metrics["rewards/rejected"].append(self._gather_mean(rejected_rewards))
        metrics["rewards/accuracies"].append(self._gather_mean((chosen_rewards > rejected_rewards).float()))
        metrics["rewards/margins"].append(self._gather_mean(chosen_rewards - rejected_rewards))
        metrics["logps/chosen"].append(self._gather_mean(batch.chosen_logps_sum))
        metrics["logps/rejected"].append(self._gather_mean(batch.rejected_logps_sum))
        for key, value in loss_metrics.items():
            metrics[key].append(self._gather_mean(value))
            if key.endswith("/weight"):  # instance weights (madpo, wpo, ...): their spread says how much they adapt
                metrics[f"{key}_std"].append(self._gather_std(value))

