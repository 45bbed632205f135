"""`DomainSFTTrainer`: TRL's SFTTrainer with online domain reweighting (per-domain token losses, upweighting).

Without `domain_reweighting` it is TRL's SFTTrainer unchanged. With it:
- the `domain` column reaches `compute_loss` (as ids, sorted domain names);
- per-example NLL sums and token counts feed `OnlineDomainWeights` (per-domain mean token loss, as DoReMi's λ_i);
- with `domain_reweighting: doge` (arXiv 2310.15393) the per-domain gradients of the mean token NLL are computed
  next to the step (`alignment.trainers.domain_gradients`), leaving the training gradient unchanged;
- with `domain_reference_model` (DoReMi, arXiv 2305.10429, the paper's definition) the recorded quantity is the
  per-token clipped excess loss ``max(ℓ_θ(x_t) − ℓ_ref(x_t), 0)``, summed per example, so λ_i is its mean over the
  domain's tokens; the reference is a frozen extra model (one more forward per micro-batch, no gradient);
- upweight mode: loss = Σ_b c_b Σ_t ℓ_bt / N_tokens with ``c_b = w_{d(b)} / q_{d(b)}``, TRL's token-level NLL
  normalisation (N_tokens over the accumulated batch and all ranks, as TRL) with every example's tokens scaled by
  its domain factor; all c_b = 1 gives exactly TRL's loss.
Only TRL's plain `nll` path is reweighted: `dft`, label smoothing, a custom `compute_loss_func`, and packing
(which merges examples of different domains into one row) are rejected at start-up.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer
from trl.trainer.utils import add_fused_lm_head

from ..domain_rules import clipped_excess_loss
from .collators import ExtraColumnsCollator
from .domain_reweighting import DomainReweightingMixin
from .metrics import gather_mean, gather_ratio, gather_total
from .hooks import TrainerHooks


class DomainSFTTrainer(TrainerHooks, DomainReweightingMixin, SFTTrainer):
    """`trl.SFTTrainer` plus `DomainReweightingMixin` (see the module docstring); checkpoint and column hooks in
    `TrainerHooks`."""

    _tag_names = ["trl", "sft", "alignment"]
    _domain_reference_model_supported = True
    _domain_gradients_supported = True

    def __init__(self, model, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, **kwargs):
        if args is not None and getattr(args, "domain_reweighting", None):
            _check_sft_options(args, kwargs)
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        self._domain_reference = None
        if self.domain_weights is not None:
            # Fixed ids (the reweighter's sorted names) for training; eval-only domains get ids >= K (not recorded).
            self.data_collator = ExtraColumnsCollator(self.data_collator, list(self.domain_weights.domain_names))
            if args.domain_reference_model:
                self._domain_reference = self._load_reference(args.domain_reference_model)
                # The recorded sums are then the per-token clipped excess, handed to the rule as `excess_loss`.
                self.domain_weights.records_excess = True

    def _load_reference(self, path: str):
        from transformers import AutoModelForCausalLM

        from ..modeling.models import resolve_model_name_or_path

        dtype = next(self.model.parameters()).dtype
        reference = AutoModelForCausalLM.from_pretrained(resolve_model_name_or_path(path), dtype=dtype)
        if reference.config.vocab_size != self.model.config.vocab_size:
            raise ValueError(f"`domain_reference_model` ({path}) has vocabulary size {reference.config.vocab_size}, "
                             f"the model {self.model.config.vocab_size}; DoReMi needs the same tokenizer for both.")
        add_fused_lm_head(reference, outputs=("log_probs",))
        reference.requires_grad_(False)
        return reference.eval().to(self.accelerator.device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        domain = inputs.pop("domain", None)
        for column in ("margin", "weight"):  # the shared collator passes them when a dataset has them
            inputs.pop(column, None)
        if self.domain_weights is None or not self.model.training or domain is None or return_outputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        inputs["use_cache"] = False
        if self.aux_loss_enabled:
            inputs["output_router_logits"] = True
        outputs = model(**inputs, fused_lm_head=True)
        token_loss = -outputs.log_probs  # [B, T-1], zero where the label is -100
        mask = outputs.label_mask.to(token_loss.dtype)
        counts = mask.sum(-1)
        self._record(domain, inputs, token_loss, mask, counts)

        weighted = self.domains.apply(domain, token_loss.sum(-1))
        normalizer = self.domains.normalizer(domain, counts)
        if normalizer is not None:
            # DoReMi's proxy objective Σ α̃ ℓ / Σ α̃ over this micro-batch's tokens
            loss = weighted.sum() / normalizer.clamp(min=1)
        else:
            num_tokens = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = weighted.sum() / torch.as_tensor(num_tokens).clamp(min=1)
            # As TRL: `num_items_in_batch` counts every rank's tokens and DDP averages the gradients across ranks.
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        if self.aux_loss_enabled:
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss / steps
        self._log_sft_metrics(inputs, outputs)
        return loss

    def _record(self, domain, inputs, token_loss, mask, counts) -> None:
        # DoGE's gradients are those of each domain's summed token NLL (divided by its token count over the step)
        if self._domain_reference is None:
            self.domains.record(domain, token_loss.sum(-1), counts)
            return
        with torch.no_grad():
            reference_loss = -self._domain_reference(**inputs, fused_lm_head=True).log_probs
        excess = clipped_excess_loss(token_loss, reference_loss, mask)
        self.domains.record(domain, excess.sum(-1), counts, gradients_of=token_loss.sum(-1))

    def _log_sft_metrics(self, inputs, outputs) -> None:
        """TRL's SFT training metrics (entropy, mean_token_accuracy, num_tokens), same names and definitions."""
        accelerator = self.accelerator
        num_valid = outputs.label_mask.sum()
        metrics = self._metrics["train"]
        metrics["entropy"].append(gather_ratio(accelerator, outputs.entropy.sum(), num_valid))
        metrics["mean_token_accuracy"].append(gather_ratio(accelerator, outputs.is_top1.sum(), num_valid))
        self._total_train_tokens += gather_total(accelerator, inputs["attention_mask"].sum()) // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        if self.aux_loss_enabled:
            metrics["aux_loss"].append(gather_mean(accelerator, outputs.aux_loss))


def _check_sft_options(args, kwargs) -> None:
    """SFT options that per-example domain losses cannot support: fail before training, naming the fix."""
    problems = {
        "loss_type": (args.loss_type != "nll", "use `loss_type: nll`"),
        "packing": (bool(args.packing), "set `packing: false` (a packed row mixes domains)"),
        "padding_free": (bool(getattr(args, "padding_free", False)), "set `padding_free: false`"),
        "label_smoothing_factor": (bool(args.label_smoothing_factor), "set it to 0"),
        "compute_loss_func": (kwargs.get("compute_loss_func") is not None, "drop the custom loss"),
    }
    bad = [f"`{name}` ({fix})" for name, (is_bad, fix) in problems.items() if is_bad]
    if bad:
        raise ValueError("`domain_reweighting` with SFT reweights TRL's plain token NLL only; " + "; ".join(bad) + ".")
    if args.domain_reference_model and args.domain_reference_losses:
        raise ValueError("Set `domain_reference_model` (per-token excess) or `domain_reference_losses` (per-domain), "
                         "not both.")
