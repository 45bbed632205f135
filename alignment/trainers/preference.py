"""`PreferenceTrainer`: TRL's DPOTrainer with its loss replaced by the `alignment.losses` registry."""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer
from trl.trainer.utils import add_fused_lm_head

from ..losses import LossState, PreferenceBatch, compute_preference_loss, get_preference_loss, preference_columns
from ..losses.turns import assistant_turn_markers
from ..packing import PackedSequences, pack_sequences
from ..token_weightings import validate_token_weighting
from .collators import ExtraColumnsCollator
from .domain_reweighting import DomainReweightingMixin
from .hooks import TrainerHooks
from .metrics import gather_mean, gather_ratio, gather_std, gather_total
from .preference_batch import PreferenceBatchBuilder, StepForward, completion_labels, model_inputs
from .preference_config import (check_padding_free, check_padding_free_losses, parameters_sharded,
                                resolve_loss_hparams)
from .process_state import StateGroup
from .reference_cache import ROW_COLUMN, ReferenceCacheMixin
from .reference_free import check_reference_free, without_reference_model
from .reference_logps import fused_forward, reference_token_logps
from .sparsepo import MASK_HEADS_NAME, SparsePOComponent
from .validation import check_chat_template, check_preference_dataset, fill_unused_chosen

# The fused-LM-head outputs TRL's DPOTrainer requests (its `__init__`), before any a selected loss adds.
_TRL_FUSED_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")
LOSS_STATE_NAME = "loss_state.pt"


class PreferenceTrainer(TrainerHooks, ReferenceCacheMixin, DomainReweightingMixin, DPOTrainer):
    """A `trl.DPOTrainer` whose loss comes from `alignment.losses` (selected by `args.loss_type`).

    Differences from the parent, all deliberate:
    - per-token log-probs of policy and reference are computed once per step and handed to the loss as a
      `PreferenceBatch`, so sequence- and token-level losses share one code path;
    - the per-example dataset columns (`margin`, `weight`, `domain`, ..., and any declared with
      `alignment.losses.register_preference_column`) are kept and reach the loss;
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
        self._loss_hparams = resolve_loss_hparams(args)
        token_weighting = getattr(args, "token_weighting", None)
        token_weighting_kwargs = dict(getattr(args, "token_weighting_kwargs", None) or {})
        if token_weighting is not None:
            # unknown name, unknown hyper-parameter or bad value -> error now, before any step
            validate_token_weighting(token_weighting, **token_weighting_kwargs)
        elif token_weighting_kwargs:
            raise ValueError(f"`token_weighting_kwargs={token_weighting_kwargs}` is set but `token_weighting` is "
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
            check_padding_free_losses(specs)
        # TRL 1.16 would warn that padding_free is disabled and reset it; we implement it (`fused_forward`), so TRL
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
        self.kept_columns.extend(preference_columns())  # at construction: includes columns a user module registered
        # Domain reweighting fixes the ids (sorted names) before any batch; the collator appends unseen (eval) ones.
        self.domain_names: list[str] = list(self.domain_weights.domain_names) if self.domain_weights else []
        self.data_collator = ExtraColumnsCollator(self.data_collator, self.domain_names)
        # Turn-level losses (dmpo) need each completion token's assistant-turn index; the markers come from the chat
        # template, derived once here so a template they cannot be found in fails before training.
        turn_markers = None
        if any(spec.requires_token_annotations for spec in specs):
            tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
            turn_markers = assistant_turn_markers(tokenizer)
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
        # SparsePO's reference outputs and mask heads (a no-op component unless a loss requires them)
        self._sparse = SparsePOComponent.build(
            args, specs, self._loss_hparams, model_config=self.model.config, accelerator=self.accelerator,
            sharded=parameters_sharded(self), deepspeed=self.is_deepspeed_enabled, optimizers=kwargs.get("optimizers"),
        )
        if self._loss_states:
            self.process_states.register(
                LOSS_STATE_NAME, StateGroup(self._loss_states, "loss"),
                missing_hint=f"the checkpoint has no state for the stateful loss(es) {sorted(self._loss_states)} "
                             "(saved with `save_only_model`, or by another loss_type). Resume from a full checkpoint.",
                # via the public method, so that code wrapping `load_loss_state` sees every resume
                restore=lambda checkpoint: self.load_loss_state(checkpoint),
            )
        if self._sparse.mask_heads is not None:
            # Not part of the model: saved beside its weights, in checkpoints and the final save.
            self.process_states.register(
                MASK_HEADS_NAME, self._sparse.mask_heads, shared=True,
                missing_hint="the checkpoint has no SparsePO mask heads (saved by another loss_type or "
                             "`sparsepo_mask`). Resume from a checkpoint of the same recipe.",
            )
        self._batch_builder = PreferenceBatchBuilder.for_losses(
            model_outputs=self._model_outputs, turn_markers=turn_markers, token_weighting=token_weighting,
            token_weighting_kwargs=token_weighting_kwargs, accelerator=self.accelerator,
            reference_outputs=self._sparse_fields if self._sparse.outputs is not None else None,
        )
        if self._padding_free:
            check_padding_free(self.accelerator.unwrap_model(self.model), self.ref_model,
                               vision=self._is_vlm or self._is_vision_dataset, sharded=parameters_sharded(self))

    # ------------------------------------------------------------------ loss
    def _reference_token_logps(self, model_kwargs: dict[str, Any], labels: torch.Tensor,
                               packed: PackedSequences | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token log-probs of the reference: `ref_model`, or the policy with adapters off under PEFT, or the
        on-disk cache when `args.reference_cache_dir` is set (``rows``: the batch's cache row ids; no forward)."""
        if self.reference_cache_enabled:
            return self._cached_reference_token_logps(labels, rows)
        return reference_token_logps(self.model, self.ref_model, model_kwargs, labels, accelerator=self.accelerator,
                                     gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
                                     packed=packed)

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        # The cache's row ids (with `reference_cache_dir`) go to the reference lookup, never to the model.
        rows = inputs.pop(ROW_COLUMN, None)
        model_kwargs = model_inputs(inputs)
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        labels = completion_labels(inputs)
        packed = pack_sequences(inputs["input_ids"], inputs["attention_mask"], labels) if self._padding_free else None
        with self._sparse.capture_policy(model):
            outputs = fused_forward(model, model_kwargs, labels, packed)
        ref_logps = None
        if not self._reference_free:
            with self._sparse.capture_reference(self.model, self.ref_model):
                ref_logps = self._reference_token_logps(model_kwargs, labels, packed, rows)
        # Position t of the fused outputs scores token t+1, so the completion mask is shifted by one.
        step = StepForward(model=model, inputs=inputs, outputs=outputs, ref_logps=ref_logps,
                           token_mask=inputs["completion_mask"][:, 1:], metrics=self._metrics[mode])
        batch = self._batch_builder.build(step)
        loss, loss_metrics = self._combined_loss(batch)
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._metrics[mode]["aux_loss"].append(gather_mean(self.accelerator, outputs.aux_loss))
        self._log_step_metrics(mode, inputs, outputs, batch, step.token_mask, loss_metrics)

        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
        return (loss, outputs) if return_outputs else loss

    def _combined_loss(self, batch: PreferenceBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``Σ_loss loss_weight · mean(per-example loss)`` over `loss_type`, and the losses' metrics (prefixed by the
        loss name when there are several); records the per-example total for domain reweighting."""
        loss = 0.0
        example_losses = 0.0  # [B] total per-example loss, for the per-domain losses of domain reweighting
        loss_metrics: dict[str, torch.Tensor] = {}
        for state in self._loss_states.values():
            state.training = self.model.training
        for name, loss_weight in zip(self.loss_types, self.loss_weights, strict=True):
            per_example, metrics = compute_preference_loss(
                name, batch, state=self._loss_states.get(name), **self._loss_hparams[name]
            )
            # the plain mean unless domain upweighting is on (`self.domains`)
            loss = loss + self._domain_weighted_mean(batch.domain, per_example) * loss_weight
            example_losses = example_losses + per_example * loss_weight  # with its graph, for DoGE's gradients
            prefix = "" if len(self.loss_types) == 1 else f"{name}/"
            loss_metrics.update({f"{prefix}{key}": value for key, value in metrics.items()})
        self.domains.record(batch.domain, example_losses)
        return loss, loss_metrics

    def _domain_weighted_mean(self, domain_ids, per_example: torch.Tensor) -> torch.Tensor:
        """Mean of ``[B]`` per-example losses, each scaled by its domain's upweight factor when upweighting (the plain
        mean otherwise); ``domain_upweight_normalize`` divides by the sum of the factors instead of B (DoReMi's proxy
        loss ``Σ α̃ ℓ / Σ α̃``) rather than the unbiased scalarisation of "Upsample or Upweight?"."""
        weighted = self.domains.apply(domain_ids, per_example)
        normalizer = self.domains.normalizer(domain_ids, torch.ones_like(per_example))
        return weighted.mean() if normalizer is None else weighted.sum() / normalizer.clamp(min=1e-12)

    def _sparse_fields(self, step: StepForward) -> dict[str, torch.Tensor]:
        # The batch builder's provider of reference outputs; the policy / reference modules are read at each step
        # (the Trainer may re-wrap `self.model`).
        return self._sparse.batch_fields(step.model, self.model, self.ref_model, step.token_mask)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        self._sparse.add_to_optimizer(optimizer, weight_decay=self.args.mask_weight_decay,
                                      max_grad_norm=self.args.max_grad_norm, world_size=self.args.world_size)
        return optimizer

    # ------------------------------------------------------------------ loss state in checkpoints
    def load_loss_state(self, checkpoint: str) -> None:
        """Restore every stateful loss's `LossState` from ``checkpoint`` (this process's `loss_state` file)."""
        self.process_states.load_file(self.args, checkpoint, LOSS_STATE_NAME)

    # ------------------------------------------------------------------ metrics
    def _log_step_metrics(self, mode, inputs, outputs, batch, token_mask, loss_metrics) -> None:
        """TRL's DPO metrics (same names), plus whatever the loss returned."""
        seq_len = token_mask.size(1)
        metrics, accelerator = self._metrics[mode], self.accelerator
        flat_mask = token_mask.bool()
        entropy = outputs.entropy[:, -seq_len:].detach()
        metrics["entropy"].append(gather_ratio(accelerator, (entropy * flat_mask).sum(), flat_mask.sum()))
        if mode == "train":
            tokens = gather_total(accelerator, inputs["attention_mask"].sum())
            self._total_train_tokens += tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]

        chosen_mask, rejected_mask = flat_mask.chunk(2, dim=0)
        chosen_logits, rejected_logits = outputs.mean_logits[:, -seq_len:].detach().chunk(2, dim=0)
        metrics["logits/chosen"].append(gather_ratio(accelerator, chosen_logits[chosen_mask].sum(), chosen_mask.sum()))
        metrics["logits/rejected"].append(
            gather_ratio(accelerator, rejected_logits[rejected_mask].sum(), rejected_mask.sum())
        )
        chosen_top1, _ = outputs.is_top1[:, -seq_len:].chunk(2, dim=0)
        metrics["mean_token_accuracy"].append(
            gather_ratio(accelerator, (chosen_top1 & chosen_mask).sum(), chosen_mask.sum())
        )

        # Reference-free: the policy log-likelihood is the implicit reward (as TRL's CPO/ORPO trainers log it).
        free = self._reference_free
        chosen_rewards = self.beta * (batch.chosen_logps_sum if free else batch.chosen_logratios).detach()
        rejected_rewards = self.beta * (batch.rejected_logps_sum if free else batch.rejected_logratios).detach()
        metrics["rewards/chosen"].append(gather_mean(accelerator, chosen_rewards))
        metrics["rewards/rejected"].append(gather_mean(accelerator, rejected_rewards))
        metrics["rewards/accuracies"].append(gather_mean(accelerator, (chosen_rewards > rejected_rewards).float()))
        metrics["rewards/margins"].append(gather_mean(accelerator, chosen_rewards - rejected_rewards))
        metrics["logps/chosen"].append(gather_mean(accelerator, batch.chosen_logps_sum))
        metrics["logps/rejected"].append(gather_mean(accelerator, batch.rejected_logps_sum))
        for key, value in loss_metrics.items():
            metrics[key].append(gather_mean(accelerator, value))
            if key.endswith("/weight"):  # instance weights (madpo, wpo, ...): their spread says how much they adapt
                metrics[f"{key}_std"].append(gather_std(accelerator, value))

