"""HAPO's adaptive temperature in `GroupRLTrainer` (``hapo_temperature_tau``): statistics of each rollout, used by
the next one's sampling.

The formula and its paper-vs-code notes: `alignment.sampling.hapo_temperature`. What this component does, after the
official loop (`verl/trainer/ppo/ray_trainer.py`: ``norm_entropys`` computed from the old-log-prob pass of step k's
rollout, handed to step k+1's vLLM sampler; ``None`` on the first step, so the first rollout uses T):

- after each training generation batch is scored, one no-grad forward over its completions gives the per-token
  entropies of ``softmax(logits / T)`` under the policy that sampled them (TRL's entropies, as in its loss; the loss
  path sees them only micro-batch by micro-batch and after updates, so they are recomputed here, like verl's old-
  log-prob pass). The statistics (`entropy_statistics`) are taken over every completion token of all processes
  (gathered), so every process samples with the same ones. Pivot and sign convention: ``entropy_pivot`` and
  ``compat_code`` of ``policy_loss_kwargs`` when ``policy_loss: hapo`` (one normalisation, as the official code
  shares ``actor.entropy_pivot``), else 0.8 / signed;
- the next training generation passes `HAPOTemperatureProcessor` to transformers' ``generate`` (the unwrapped model's
  ``generate`` is wrapped for that one call: TRL 1.16 has no way to hand ``generate`` a logits processor). Evaluation
  and greedy generation (ReMax's baseline) are left alone;
- logs ``hapo/temperature_mean``: the mean T_t over the sampled completion tokens (T on the first step);
- the statistics are per-process state (`ProcessStates`, ``hapo_temperature.pt``): a resumed run samples its first
  batch with the statistics of the last rollout before the checkpoint, as the uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import torch
from transformers import LogitsProcessorList
from trl.models.utils import disable_gradient_checkpointing

from ..policy_losses.hapo import EntropyStatistics, entropy_statistics
from ..sampling.hapo_temperature import HAPOTemperatureProcessor

STATE_FILE = "hapo_temperature.pt"


def check_hapo_temperature(args) -> None:
    """Start-up refusals for ``hapo_temperature_tau`` (a no-op when it is unset)."""
    tau = args.hapo_temperature_tau
    if tau is None:
        return
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not (0.0 <= tau < 1.0) or math.isnan(tau):
        raise ValueError(f"`hapo_temperature_tau` must be a number in [0, 1) (T_t = T (1 + tau h), |h| <= 1, must "
                         f"stay > 0; HAPO's official value is 0.05), got {tau!r}.")
    if args.use_vllm:
        raise ValueError("`hapo_temperature_tau` is not supported with `use_vllm: true`: the per-token temperature is "
                         "a transformers logits processor passed to `generate`, and vLLM's sampler has no such hook "
                         "(the official code patches vLLM). Set `use_vllm: false` or unset `hapo_temperature_tau`.")
    if args.use_transformers_continuous_batching:
        raise ValueError("`hapo_temperature_tau` is not supported with `use_transformers_continuous_batching`: "
                         "`generate_batch` takes no logits processor. Turn it off or unset `hapo_temperature_tau`.")
    kwargs = args.generation_kwargs or {}
    temperature = kwargs.get("temperature", args.temperature)
    if kwargs.get("do_sample", True) is False or temperature is None or temperature <= 0:
        raise ValueError(f"`hapo_temperature_tau` adapts a sampling temperature, but generation is greedy "
                         f"(temperature {temperature!r}, do_sample {kwargs.get('do_sample', True)!r}). Set "
                         "`temperature` > 0 (HAPO's recipes: 1.0) or unset `hapo_temperature_tau`.")


def check_hapo_temperature_trainer(trainer) -> None:
    """Refusals that need the built trainer: a custom rollout function bypasses transformers' ``generate``."""
    if getattr(trainer, "rollout_func", None) is not None:
        raise ValueError("`hapo_temperature_tau` needs TRL's own generation (transformers' `generate`); a "
                         "`rollout_func` bypasses it. Remove one of the two.")


class HAPOTemperature:
    """The statistics of the last training rollout and what uses them (see the module docstring)."""

    def __init__(self, *, tau: float, pivot: float = 0.8, compat_code: bool = False):
        self.tau = float(tau)
        self.pivot = float(pivot)
        self.compat_code = bool(compat_code)
        self.stats: EntropyStatistics | None = None

    @classmethod
    def from_args(cls, args) -> HAPOTemperature | None:
        if args.hapo_temperature_tau is None:
            return None
        kwargs = dict(args.policy_loss_kwargs or {}) if args.policy_loss == "hapo" else {}
        return cls(tau=args.hapo_temperature_tau, pivot=kwargs.get("entropy_pivot", 0.8),
                   compat_code=kwargs.get("compat_code", False))

    # ---------------------------------------------------------------- checkpoint (`ProcessStates` holder)
    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.stats is None:  # before the first rollout
            return {}
        return {name: value.detach().cpu() for name, value in self.stats._asdict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats = EntropyStatistics(**state) if state else None

    # ---------------------------------------------------------------- statistics of a rollout
    def update(self, trainer, output: dict) -> None:
        """Statistics of this training generation batch (``output`` of TRL's `_generate_and_score_completions`)."""
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        completion_ids = output["completion_ids"]
        with torch.no_grad(), disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
            _, entropies, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model,
                torch.cat([output["prompt_ids"], completion_ids], dim=1),
                torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1),
                completion_ids.size(1),
                batch_size=trainer.args.per_device_train_batch_size,
                compute_entropy=True,
            )
        accelerator = trainer.accelerator
        entropies = accelerator.gather(accelerator.pad_across_processes(entropies.float(), dim=1))
        mask = accelerator.gather(accelerator.pad_across_processes(mask.float(), dim=1))
        stats = entropy_statistics(entropies, mask, self.pivot, self.compat_code)
        if stats is not None:  # an empty rollout (every completion masked) keeps the previous statistics
            self.stats = stats

    # ---------------------------------------------------------------- sampling
    @contextlib.contextmanager
    def sampling(self, trainer):
        """During the block, the model TRL generates with applies the processor; yields it (None: no statistics
        yet, plain temperature)."""
        if self.stats is None:
            yield None
            return
        device = trainer.accelerator.device
        stats = EntropyStatistics(*(value.to(device) for value in self.stats))
        processor = HAPOTemperatureProcessor(stats, temperature=trainer.generation_config.temperature, tau=self.tau)
        model = trainer.accelerator.unwrap_model(trainer.model_wrapped)  # what TRL's unwrap context yields
        own = vars(model).get("generate")
        original = model.generate

        def generate(*args, logits_processor=None, **kwargs):
            processors = LogitsProcessorList(logits_processor or [])
            processors.append(processor)
            return original(*args, logits_processor=processors, **kwargs)

        model.generate = generate
        try:
            yield processor
        finally:
            if own is None:
                del model.generate
            else:
                model.generate = own

    def log(self, trainer, processor: HAPOTemperatureProcessor | None, completion_ids: list[list[int]]) -> None:
        """``hapo/temperature_mean`` over the sampled tokens of this call on all processes (T without statistics)."""
        device = trainer.accelerator.device
        if processor is None or not processor.temperatures:
            total = torch.tensor(float(trainer.generation_config.temperature) * sum(map(len, completion_ids)),
                                 device=device)
        else:
            temps = torch.stack(processor.temperatures, dim=1)  # [B, steps]: step j sampled token j of each row
            lengths = torch.tensor([len(ids) for ids in completion_ids], device=temps.device)
            sampled = torch.arange(temps.size(1), device=temps.device).unsqueeze(0) < lengths.unsqueeze(1)
            total = (temps * sampled).sum().to(device)
        count = torch.tensor(float(sum(map(len, completion_ids))), device=device)
        total, count = trainer.accelerator.gather(torch.stack([total.float(), count])).view(-1, 2).sum(0)
        if count > 0:
            trainer._metrics["train"]["hapo/temperature_mean"].append((total / count).item())
