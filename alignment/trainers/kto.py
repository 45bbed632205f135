"""`KTOAlignmentTrainer`: TRL's `KTOTrainer` with the loss taken from the `alignment.unpaired` registry.

TRL 1.16 has no separate loss method on `KTOTrainer` (older releases had ``kto_loss``): the loss is written inline in
``_compute_loss``, between the forward passes and the metrics. That method is therefore the narrowest one to
override. The override keeps TRL's forward passes (the policy, the reference model or the PEFT adapter switched off,
precomputed reference log-probs, TRL's own ``_compute_kl_logps`` for the mismatched pairs) and TRL's metrics, and
replaces only the inline loss with the registered pure function (`alignment.unpaired`): TRL's ``loss_type`` values
(``kto``, ``apo_zero_unpaired``) give the same loss and gradients (tests/test_kto.py), and a new unpaired loss is one
registered file. Everything else (data preparation, KL completions, the sequential sampler, reference handling,
checkpoints) is TRL's.
"""

from __future__ import annotations

import warnings

import torch
from accelerate.utils import is_peft_model
from trl import KTOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from ..unpaired import kl_reference_point, resolve_unpaired_loss

# Batch keys that are not model inputs (TRL 1.16's list in `KTOTrainer._compute_loss`).
_NON_MODEL_KEYS = frozenset({"completion_mask", "KL_input_ids", "KL_attention_mask", "KL_completion_mask",
                             "KL_token_type_ids", "KL_mm_token_type_ids", "label", "ref_logps", "ref_KL_logps"})


class KTOAlignmentTrainer(KTOTrainer):
    """TRL's `KTOTrainer` whose loss is the registered unpaired loss named by ``args.loss_type``."""

    def __init__(self, *args, **kwargs):
        config = kwargs["args"] if "args" in kwargs else args[2]
        # an unknown loss or a bad hyper-parameter fails before TRL tokenises the data or copies the reference model
        self.loss_spec, self.loss_hparams = resolve_unpaired_loss(config)
        super().__init__(*args, **kwargs)
        # TRL decides from the name (everything but `apo_zero_unpaired` estimates the KL); the registry decides from
        # the loss's signature, so a new loss without `reference_point` skips the mismatched forward passes.
        self.calculate_KL = self.loss_spec.uses_reference_point

    def _compute_loss(self, model, inputs, return_outputs):
        """TRL 1.16's `KTOTrainer._compute_loss` with the registered loss in place of its inline one."""
        mode = "train" if self.model.training else "eval"
        batch = {k: (v.to(self.accelerator.device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}

        KL_logps = self._compute_kl_logps(model, batch)
        model_kwargs = {k: v for k, v in batch.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        outputs = model(**model_kwargs, labels=completion_labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
        seq_len = batch["input_ids"].size(1) - 1
        completion_logps = outputs.log_probs[:, -seq_len:].sum(-1)
        if completion_logps.shape[0] != len(batch["label"]):
            raise ValueError("There is a mismatch between the number of examples in this batch and the number of "
                             "examples for which an output sequence was predicted.")

        ref_completion_logps, ref_KL_logps = self._reference_logps(batch, model_kwargs, completion_labels, seq_len)
        labels = torch.as_tensor(batch["label"], dtype=torch.bool, device=completion_logps.device)
        logratios = completion_logps - ref_completion_logps
        inputs_of_loss = {}
        if self.loss_spec.uses_reference_point:
            kl = kl_reference_point(KL_logps, ref_KL_logps, gather=self.accelerator.gather_for_metrics)
            inputs_of_loss["reference_point"] = kl
        else:
            kl = torch.zeros(1, device=completion_logps.device)
        losses = self.loss_spec.fn(logratios, labels, **inputs_of_loss, **self.loss_hparams)
        loss = losses.nanmean()

        self._record_metrics(mode, batch, outputs, seq_len, labels, completion_logps, logratios, kl)
        if self.aux_loss_enabled:
            aux_loss = outputs.aux_loss
            loss = loss + self.router_aux_loss_coef * aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())
        if return_outputs:
            warnings.warn(
                "`return_outputs=True`, and the logits it passes to `compute_metrics`, are deprecated in TRL and will "
                "be removed in v2.0.0. The fused LM head does not build the logits, so they are recomputed with an "
                "extra forward pass.", FutureWarning, stacklevel=2)
            with torch.no_grad():
                outputs = model(**model_kwargs)
        return (loss, outputs) if return_outputs else loss

    def _reference_logps(self, batch, model_kwargs, completion_labels, seq_len):
        """Summed reference log-probs of the completions [B] and of the mismatched KL pairs [B] (None when the loss
        takes no reference point): precomputed, or from the reference model / the policy with its adapter off."""
        if self.precompute_ref_logps:
            return batch["ref_logps"], (batch["ref_KL_logps"] if self.calculate_KL else None)
        ref_model_kwargs = {k: v for k, v in model_kwargs.items() if k != "output_router_logits"}
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if is_peft_model(self.model) and self.ref_model is None:
                unwrapped = self.accelerator.unwrap_model(self.model)
                with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                    ref_KL_logps = self._compute_kl_logps(self.model, batch)
                    ref_outputs = self.model(**ref_model_kwargs, labels=completion_labels, fused_lm_head=True)
            else:
                ref_KL_logps = self._compute_kl_logps(self.ref_model, batch)
                ref_outputs = self.ref_model(**ref_model_kwargs, labels=completion_labels, fused_lm_head=True)
        return ref_outputs.log_probs[:, -seq_len:].sum(-1), ref_KL_logps

    def _record_metrics(self, mode, batch, outputs, seq_len, labels, completion_logps, logratios, kl):
        """TRL 1.16's KTO metrics, unchanged: kl, entropy, num_tokens, logits/*, rewards/*, logps/*, margins."""
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        metrics["kl"].append(kl.item())

        mask = batch["completion_mask"][:, 1:]
        entropy_sum = gather((outputs.entropy[:, -seq_len:].detach() * mask).sum()).sum()
        total_tokens = gather(mask.sum()).sum()
        metrics["entropy"].append((entropy_sum / total_tokens).item() if total_tokens > 0 else 0.0)
        if mode == "train":
            self._total_train_tokens += gather(batch["attention_mask"].sum()).sum().item() // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]

        mean_logits = outputs.mean_logits[:, -seq_len:].detach()
        rewards = self.beta * logratios.detach()
        counts = {}
        for side, rows in (("chosen", labels), ("rejected", ~labels)):
            side_mask = mask[rows].bool()
            tokens = gather(side_mask.sum()).sum().item()
            if tokens > 0:
                metrics[f"logits/{side}"].append(gather(mean_logits[rows][side_mask].sum()).sum().item() / tokens)
            counts[side] = gather(rows.sum()).sum().item()
            if counts[side] > 0:
                metrics[f"rewards/{side}"].append(gather(rewards[rows].nansum()).nansum().item() / counts[side])
                metrics[f"logps/{side}"].append(
                    gather(completion_logps.detach()[rows].nansum()).nansum().item() / counts[side])
        if counts["chosen"] > 0 and counts["rejected"] > 0:
            metrics["rewards/margins"].append(metrics["rewards/chosen"][-1] - metrics["rewards/rejected"][-1])
