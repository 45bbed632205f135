"""Multi-objective reward weighting during group-RL training (Lu et al., "Learning to Optimize Multi-Objective
Alignment Through Dynamic Reward Weighting", arXiv 2509.11452), as a mixin of `GroupRLTrainer`.

The K rewards of a run (`reward_funcs`) are scalarised ``r = Σ_k w_k r_k`` before the advantage estimator sees them.
`args.reward_weighting` picks how ``w`` evolves (the registry and weight objects live in
`alignment.reward_weightings`):

* ``fixed``: TRL's `reward_weights`, constant.
* ``gradient`` (method (b)): at every generation batch, before its advantages are computed, each objective's policy
  gradient ``g_k`` is taken on the selected decoder layers (the REINFORCE surrogate at ratio 1 with the advantages
  the estimator gives to ``r_k`` alone, token-mean over the batch, averaged over processes); the influence
  ``s_k = Σ_j ⟨g_k, g_j⟩`` updates ``w ← softmax(log w + η_t s / λ)`` (η_t the current learning rate), and the
  batch is scalarised with the new weights. Costs one extra forward and K backward passes per generation batch.
* ``hypervolume`` (method (a)): after each evaluation, the eval mean rewards ``v`` are scored against the buffer of
  past Pareto points; the meta-reward ``m = 0.5 + 1.5 tanh(max(ΔHV, 0))`` multiplies the training rewards until the
  next evaluation. A constant factor on all rewards cancels in a std-normalised advantage (GRPO), so the trainer
  refuses this method with an estimator that is invariant to reward scale.

Weights are logged every step as ``reward_weight/<reward>`` (and ``reward_influence/<reward>`` for ``gradient``,
``reward_weight/meta_reward`` and ``reward_weight/hv_contribution`` for ``hypervolume``) and saved in checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
from trl.models.utils import disable_gradient_checkpointing

from ..advantages import compute_advantages, get_advantage_estimator
from ..reward_weightings import REWARD_WEIGHTINGS, build_reward_weighting
from .gradients import group_gradients, select_gradient_parameters

STATE_NAME = "reward_weighting.pt"


def check_reward_weighting_config(args, num_rewards: int) -> None:
    """Start-up checks of `reward_weighting` / `reward_weighting_kwargs` (names, keys, needed settings)."""
    spec = REWARD_WEIGHTINGS.validate(args.reward_weighting, **args.reward_weighting_kwargs)
    if not spec.multi_objective:
        return
    if num_rewards < 2:
        raise ValueError(f"`reward_weighting={args.reward_weighting!r}` balances several rewards, but `reward_funcs` "
                         f"has {num_rewards}; add objectives (e.g. `format_reward`) or use `fixed`.")
    if spec.updated_by == "evaluation":
        if args.eval_strategy == "no":
            raise ValueError(f"`reward_weighting: {args.reward_weighting}` updates its weights after each evaluation; "
                             "set `eval_strategy` (e.g. `steps` with `eval_steps`) and give an eval dataset.")
        if get_advantage_estimator(args.advantage_estimator).is_scale_invariant(args.advantage_kwargs):
            raise ValueError(f"`reward_weighting: {args.reward_weighting}` multiplies every reward by one meta-reward, which "
                             f"advantage_estimator {args.advantage_estimator!r} (with {args.advantage_kwargs}) "
                             "normalises away; it would change nothing. Use an estimator without std scaling (`dr_grpo`, "
                             "`rloo`, `remax`, or `grpo` with `scale_rewards: none`) or `reward_weighting: gradient`.")


def _paper_layers(count: int) -> tuple[int, int]:
    """Default decoder layers of the gradients: the middle of the stack in the paper's proportion (layers 10-25 of
    Qwen3-8B's 36), i.e. ``⌊10L/36⌋..⌊25L/36⌋`` for ``L`` layers (inclusive)."""
    return 10 * count // 36, 25 * count // 36


class RewardWeightingMixin:
    """Drives `args.reward_weighting` in a `trl.GRPOTrainer` subclass (see the module docstring)."""

    def _init_reward_weighting(self) -> None:
        args = self.args
        self.reward_weighter = build_reward_weighting(args.reward_weighting, self.reward_weights.tolist(),
                                                      list(self.reward_func_names), **args.reward_weighting_kwargs)
        self._weighting_params: list[torch.nn.Parameter] = []
        if REWARD_WEIGHTINGS.get(args.reward_weighting).updated_by == "gradients":
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:
                raise ValueError("`reward_weighting: gradient` takes per-objective gradients of unsharded parameters; "
                                 "it is not supported under DeepSpeed or FSDP. Use DDP or `hypervolume`.")
            layers = args.reward_weighting_kwargs.get("layers")
            chosen = select_gradient_parameters(
                self.accelerator.unwrap_model(self.model),
                blocks=lambda count: tuple(layers) if layers is not None else _paper_layers(count),
                field="reward_weighting_kwargs.layers",
                no_blocks_fix="`reward_weighting: gradient` does not support this model's layout.")
            self._weighting_params = [p for _, p in chosen]
        self._sync_reward_weights()
        if args.reward_weighting != "fixed":
            self.process_states.register(
                STATE_NAME, self.reward_weighter, after_load=self._sync_reward_weights,
                missing_hint="the checkpoint has no reward-weighting state (saved with another `reward_weighting`, "
                             "or with `save_only_model`). Resume from a checkpoint of this run's setting, or start a "
                             "new run.",
            )

    def _sync_reward_weights(self) -> None:
        self.reward_weights = self.reward_weighter.weights.to(torch.float32)

    def _log_reward_weights(self, mode: str) -> None:
        if len(self.reward_func_names) < 2:
            return
        for key, value in self.reward_weighter.log_dict().items():
            self._metrics[mode][key].append(value)

    # ---- (b) gradient-based
    def _update_weights_from_gradients(self, output: dict[str, Any], rewards_per_func: torch.Tensor, group_size: int,
                                       estimator_inputs: dict[str, Any],
                                       baseline_per_func: torch.Tensor | None = None) -> None:
        """Method (b) on this generation batch: per-objective gradients -> influence -> new weights.

        ``rewards_per_func`` ``[N, K]`` (all processes, group order); ``baseline_per_func`` ``[num_groups, K]``, the
        greedy rollouts' rewards when the estimator needs them (ReMax)."""
        local = output["completion_ids"].size(0)
        start = self.accelerator.process_index * local
        per_objective = []
        for k in range(rewards_per_func.size(1)):
            inputs = dict(estimator_inputs)
            if baseline_per_func is not None:
                inputs["baseline_rewards"] = baseline_per_func[:, k].nan_to_num(0.0)
            advantages = compute_advantages(self.args.advantage_estimator, rewards_per_func[:, k].nan_to_num(0.0),
                                            group_size, **self.args.advantage_kwargs, **inputs)
            per_objective.append(advantages[start:start + local])
        gradients = self._objective_gradients(output, torch.stack(per_objective, dim=1))
        self.reward_weighter.accumulate(gradients)
        self.reward_weighter.step(self.lr_scheduler.get_last_lr()[0] if self.lr_scheduler else self.args.learning_rate)
        self._sync_reward_weights()

    def _objective_gradients(self, output: dict[str, Any], advantages: torch.Tensor) -> torch.Tensor:
        """``[K, P]`` policy gradients of the selected parameters, one row per objective, mean over processes.

        Objective k's loss is ``−Σ_{i,t} A_{i,k} log π(o_{i,t}) / Σ mask`` (token-mean over the batch): the gradient
        of the clipped surrogate at ratio 1, i.e. at the rollout policy, before any update on this batch.
        """
        model = self.accelerator.unwrap_model(self.model)
        params = self._weighting_params
        mask = output["completion_mask"] * output.get("tool_mask", 1)
        total_tokens = mask.sum().clamp(min=1)
        num_objectives = advantages.size(1)
        flat = torch.zeros(num_objectives, sum(p.numel() for p in params), device=mask.device)
        chunk = self.args.per_device_train_batch_size
        with disable_gradient_checkpointing(model, self.args.gradient_checkpointing_kwargs):
            for begin in range(0, mask.size(0), chunk):
                rows = slice(begin, begin + chunk)
                completion_ids = output["completion_ids"][rows]
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    model, torch.cat([output["prompt_ids"][rows], completion_ids], dim=1),
                    torch.cat([output["prompt_mask"][rows], output["completion_mask"][rows]], dim=1),
                    completion_ids.size(1),
                )
                losses = [-(advantages[rows, k:k + 1] * logps * mask[rows]).sum() / total_tokens
                          for k in range(num_objectives)]
                for k, gradient in enumerate(group_gradients(losses, params, keep_graph=False)):
                    flat[k] += gradient
        return self.accelerator.reduce(flat, reduction="mean")

    # ---- (a) hypervolume, after each evaluation
    def _update_weights_from_evaluation(self) -> None:
        metrics = self._metrics["eval"]
        keys = [f"rewards/{name}/mean" for name in self.reward_func_names]
        if not all(metrics.get(key) for key in keys):
            return
        scores = [sum(metrics[key]) / len(metrics[key]) for key in keys]
        self.reward_weighter.update(scores)
        self._sync_reward_weights()
        for key, value in self.reward_weighter.log_dict().items():
            metrics[key] = [value]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # TRL's `log` averages and clears `_metrics[mode]`; read the eval rewards just before it does.
        if self.args.reward_weighting == "hypervolume" and not self.model.training:
            self._update_weights_from_evaluation()
        super().log(logs, start_time)


__all__ = ["RewardWeightingMixin", "check_reward_weighting_config", "STATE_NAME"]
