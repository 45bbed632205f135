"""`GroupRLTrainer`: TRL's GRPOTrainer with advantages from the `alignment.advantages` registry.

What changes against `trl.GRPOTrainer` (1.16), and where:

- **Advantages.** TRL computes them inline in `_generate_and_score_completions` (group mean / std of the summed
  rewards). We let TRL run unchanged, keep the gathered rewards it computed (`_calculate_rewards` hook), and replace
  `advantages` in its output with `compute_advantages(args.advantage_estimator, rewards, num_generations,
  **args.advantage_kwargs, completion_lengths=..., max_completion_length=...)` over the whole generation batch (all
  processes), sliced to this process exactly as TRL slices. The logged completions table shows the same values.
  An estimator that takes `completion_mean_logps` (DRPO) gets the sampling policy's mean token log-probs
  (`rollout_logps`); one derived for a single `loss_type` gets it by default (`GroupRLConfig`) and rejects others.
- **Policy loss.** TRL's `epsilon` / `epsilon_high` already give asymmetric bounds (NGRPO 0.16 / 0.24, DAPO 0.2 /
  0.28). With `args.policy_loss` set (`alignment.policy_losses`: `clipped`, `sign_clipped`, `hapo`, `apa`, ...),
  `_compute_loss` computes the same per-token log-probs, ratio and KL term as TRL, takes the per-token loss from that
  registry instead of TRL's surrogate and reduces it with TRL's aggregation for `loss_type` (`AGGREGATIONS`).
  Unset, TRL's own `_compute_loss` runs.
- **Logging.** `advantages/{mean,std,min,max}` of the advantages actually used, `frac_all_wrong_groups` (groups with
  no completion scored > 0 by `accuracy_reward`, or by the summed reward without it) and, with a policy loss, the
  metrics it returns (TRL's clip ratios; under HAPO `hapo/h_hat_mean` and the mean per-token clip bounds).
- **ReMax.** An estimator that requires `baseline_rewards` gets one greedy rollout per prompt, scored by the same
  rewards (`greedy_baseline`); logged as `remax/baseline_reward`.
- **Several rewards.** `args.reward_weighting` (`reward_weighting` module): fixed weights, or Lu et al.'s dynamic
  weights (gradient-based before each batch's advantages, or hypervolume-guided after each evaluation), logged as
  `reward_weight/<reward>` and saved in checkpoints.
- **Dynamic sampling.** `args.group_filter` (`dynamic_sampling` module): DAPO's zero-variance / NGRPO's all-correct
  group filter with refills from new prompts, logged as `group_filter/drop_rate` and `group_filter/generation_rounds`.
  With several processes the decision is taken on the gathered batch and every rank trains on its slice of it.
- **Adaptive temperature.** `args.hapo_temperature_tau` (`adaptive_temperature` module): HAPO's per-token sampling
  temperature from the previous rollout's entropy statistics, a logits processor on transformers' `generate`;
  logged as `hapo/temperature_mean`, statistics saved in checkpoints.
- **Start-up checks.** Unknown estimator / policy loss / hyper-parameter (or a bad value, or a policy loss needing
  inputs the run will not have), generation paths the greedy rollout does not cover, TRL options that our advantages
  or policy loss would silently override, unresolvable rewards or ones that fail on the first training example,
  reward-weighting settings that cannot work, and a dataset without the columns the rewards read all fail before the
  first step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from datasets import Dataset
from trl import GRPOTrainer

from ..advantages import compute_advantages, get_advantage_estimator, resolve_loss_type, validate_advantage_estimator
from ..policy_losses import AGGREGATIONS, POLICY_LOSSES, aggregate, compute_policy_loss, validate_policy_loss
from ..rewards.sources import trl_reward_funcs
from .adaptive_temperature import STATE_FILE as HAPO_TEMPERATURE_FILE
from .adaptive_temperature import HAPOTemperature, check_hapo_temperature, check_hapo_temperature_trainer
from .domain_reweighting import DomainReweightingMixin
from .dynamic_sampling import check_group_filter, check_refill_dataset, filtered_generation
from .greedy_baseline import check_greedy_baseline_supported, greedy_baseline_rewards
from .hooks import TrainerHooks
from .metrics import global_masked_mean
from .reward_weighting import RewardWeightingMixin, check_reward_weighting_config
from .rollout_logps import completion_mean_logps

# Per-batch estimator inputs this trainer supplies (see `_estimator_inputs`).
_SUPPLIED_INPUTS = ("completion_lengths", "max_completion_length", "baseline_rewards", "completion_mean_logps")
# Reward function whose score defines "correct" for the all-wrong-group statistic.
_CORRECTNESS_REWARD = "accuracy_reward"


# TRL options our policy-loss path does not implement: name -> default it must keep.
_SURROGATE_CONFLICTS = {
    "importance_sampling_level": "token",
    "off_policy_mask_threshold": None,
    "top_entropy_quantile": 1.0,
    "delta": None,
    "entropy_coef": 0.0,
    "use_adaptive_entropy": False,
    "use_vllm": False,
}


def resolve_reward_funcs(names: list[str], reward_kwargs: dict[str, dict],
                         example: dict | None = None) -> list[Callable]:
    """Reward callables for a recipe's `reward_funcs` strings (`alignment.rewards.sources.resolve_rewards`: registry
    names, import paths, files, reward models), each called once on ``example`` (or a dummy one)."""
    from ..rewards.sources import resolve_rewards

    return resolve_rewards(names, reward_kwargs, example)


class GroupRLTrainer(TrainerHooks, RewardWeightingMixin, DomainReweightingMixin, GRPOTrainer):
    """A `trl.GRPOTrainer` whose advantages come from `alignment.advantages` (selected by `args.advantage_estimator`).

    Reward functions: the `reward_funcs` argument (callables or Hub ids, as in TRL) or, when omitted, the strings in
    `args.reward_funcs` (registry names, import paths, files, reward models: `alignment.rewards.sources`), each called
    once on the first training example. See the module docstring for what differs from the parent.
    """

    _tag_names = ["trl", "grpo", "alignment"]
    _name = "GroupRL"
    # GRPO's own sampler repeats each prompt for its group; domain weights apply as advantage scales (upweight).
    _domain_upsampling_supported = False

    def __init__(self, model, reward_funcs=None, args=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, **kwargs):
        if args is None:
            raise ValueError("GroupRLTrainer needs `args` (an `alignment.GroupRLConfig`).")
        self._check_config(args)
        check_refill_dataset(train_dataset, group_filter=args.group_filter)
        given = reward_funcs if reward_funcs is None or isinstance(reward_funcs, list) else [reward_funcs]
        names = list(args.reward_funcs) if given is None else [getattr(f, "__name__", "") for f in given]
        for name, dataset in [("train", train_dataset), *self._eval_sets(eval_dataset)]:
            self._check_dataset(dataset, name, names)
        if given is None:  # each is called once on the first training example before the run starts
            first = train_dataset[0] if isinstance(train_dataset, Dataset) and len(train_dataset) else None
            given = resolve_reward_funcs(names, dict(args.reward_kwargs), first)
        # A resolved reward model goes to TRL as model + tokenizer: TRL places it on the device and scores it.
        funcs, reward_tokenizers = trl_reward_funcs(given)
        if reward_tokenizers is not None:
            kwargs.setdefault("reward_processing_classes", reward_tokenizers)
        from ..rewards.checks import checked_reward_funcs

        reward_funcs = funcs = checked_reward_funcs(funcs)  # NaN/inf scores: an error naming the function
        check_reward_weighting_config(args, len(funcs))
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        self._pending: dict[str, torch.Tensor] = {}
        if self._needs_greedy_baseline:
            check_greedy_baseline_supported(self)
        self._init_reward_weighting()
        self._hapo_temperature = HAPOTemperature.from_args(args)
        if self._hapo_temperature is not None:
            check_hapo_temperature_trainer(self)
            self.process_states.register(
                HAPO_TEMPERATURE_FILE, self._hapo_temperature,
                missing_hint="the checkpoint was written without `hapo_temperature_tau`; resume with the same "
                             "setting, or start a new run.")

    # ------------------------------------------------------------------ configuration
    @staticmethod
    def _eval_sets(eval_dataset) -> list[tuple[str, Any]]:
        if isinstance(eval_dataset, dict):
            return list(eval_dataset.items())
        return [("eval", eval_dataset)]

    @staticmethod
    def _check_config(args) -> None:
        spec = get_advantage_estimator(args.advantage_estimator)  # unknown name -> error listing the valid ones
        missing = [name for name in spec.requires if name not in _SUPPLIED_INPUTS]
        if missing:
            raise ValueError(f"advantage_estimator {spec.name!r} needs {missing}, which GroupRLTrainer does not "
                             f"produce (it supplies {list(_SUPPLIED_INPUTS)}). Choose another estimator.")
        validate_advantage_estimator(args.advantage_estimator, **args.advantage_kwargs)
        check_hapo_temperature(args)
        check_group_filter(group_filter=args.group_filter, max_generation_rounds=args.max_generation_rounds)
        # GroupRLConfig resolved an unset loss_type already; this rejects one the estimator cannot train with.
        resolve_loss_type(spec.name, args.loss_type, default=args.loss_type)
        replaced = {"scale_rewards": ("group", "set `advantage_estimator` / `advantage_kwargs` instead (e.g. "
                                               "`dr_grpo` for no std, or `grpo` with `scale_rewards` in kwargs)"),
                    "multi_objective_aggregation": ("sum_then_normalize", "rewards are summed with `reward_weights` "
                                                    "and the estimator normalises the sum")}
        for key, (default, fix) in replaced.items():
            if getattr(args, key) != default:
                raise ValueError(f"`{key}={getattr(args, key)!r}` is a TRL option that GroupRLTrainer replaces: {fix}.")
        if args.epsilon < 0 or (args.epsilon_high is not None and args.epsilon_high < 0):
            raise ValueError(f"`epsilon` ({args.epsilon}) and `epsilon_high` ({args.epsilon_high}) must be >= 0.")
        if args.policy_loss is not None:
            # One call on dummy inputs: the loss's own value checks, and a loss needing TRL's reference log-probs
            # (computed only with beta > 0) fails here.
            validate_policy_loss(args.policy_loss, args.policy_loss_kwargs, reference_logps=args.beta != 0.0)
            if args.loss_type not in AGGREGATIONS:
                raise ValueError(f"`loss_type={args.loss_type!r}` has no aggregation on our policy-loss path; with "
                                 f"`policy_loss` use one of {AGGREGATIONS.names()}.")
            for key, default in _SURROGATE_CONFLICTS.items():
                if getattr(args, key) != default:
                    raise ValueError(f"`{key}={getattr(args, key)!r}` is not supported together with `policy_loss`; "
                                     f"leave it at {default!r}.")
        elif args.policy_loss_kwargs:
            raise ValueError("`policy_loss_kwargs` is set but `policy_loss` is not; choose a policy loss "
                             f"({', '.join(POLICY_LOSSES.names())}) or remove the kwargs.")

    @staticmethod
    def _check_dataset(dataset, name: str, names: list[str]) -> None:
        if not isinstance(dataset, Dataset):
            return
        if "prompt" not in dataset.column_names:
            raise ValueError(f"The {name} dataset has no `prompt` column (columns: {dataset.column_names}); group RL "
                             "needs prompt-only data, e.g. `dataset_name: task-suite` loads it in that format.")
        if _CORRECTNESS_REWARD in names and "answer" not in dataset.column_names:
            raise ValueError(f"The {name} dataset has no `answer` column, which `accuracy_reward` compares the "
                             "completions' final answers with. Add one or choose other `reward_funcs`.")

    @property
    def _needs_greedy_baseline(self) -> bool:
        return "baseline_rewards" in get_advantage_estimator(self.args.advantage_estimator).requires

    # ------------------------------------------------------------------ advantages
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        # Token counts before `mask_truncated_completions` zeroes the mask of truncated completions.
        lengths = torch.tensor([len(ids) for ids in completion_ids_list], device=self.accelerator.device)
        self._pending = {"rewards_per_func": rewards_per_func, "lengths": self.accelerator.gather(lengths)}
        return rewards_per_func

    def _score_completions(self, inputs, prompts, completions, completion_ids_list) -> torch.Tensor:
        """TRL's reward call without this class's bookkeeping (used for ReMax's greedy rollouts)."""
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def _generate_and_score_completions(self, inputs):
        if self.model.training and self.args.group_filter != "none":  # DAPO / NGRPO dynamic sampling
            output = filtered_generation(self, inputs, self._score_generation_batch,
                                         group_filter=self.args.group_filter,
                                         max_generation_rounds=self.args.max_generation_rounds)
        else:
            output = self._score_generation_batch(inputs)
        if self._hapo_temperature is not None and self.model.training:  # statistics for the next rollout
            self._hapo_temperature.update(self, output)
        return output

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        # HAPO's per-token temperature: training rollouts only (not evaluation, not ReMax's greedy baseline).
        if self._hapo_temperature is None or not self.model.training or not self.generation_config.do_sample:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        with self._hapo_temperature.sampling(self) as processor:
            completion_ids, logprobs = super()._generate_single_turn(prompt_ids, images, multimodal_fields,
                                                                     num_generations, has_tool_images)
        self._hapo_temperature.log(self, processor, completion_ids)
        return completion_ids, logprobs

    def _score_generation_batch(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        rewards_per_func = self._pending.pop("rewards_per_func")
        lengths = self._pending.pop("lengths")
        if torch.isnan(rewards_per_func).all(dim=1).any():
            raise RuntimeError("Every reward function returned None for some completion; the registry's advantage "
                               "estimators need a reward for every completion.")
        estimator_inputs = self._estimator_inputs(lengths, output)
        baseline_per_func = greedy_baseline_rewards(self, inputs, group_size) if self._needs_greedy_baseline else None
        if mode == "train" and self.args.reward_weighting == "gradient":
            self._update_weights_from_gradients(output, rewards_per_func, group_size, estimator_inputs,
                                                baseline_per_func)
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        if baseline_per_func is not None:
            estimator_inputs["baseline_rewards"] = (baseline_per_func * weights.unsqueeze(0)).nansum(dim=1)
            self._metrics[mode]["remax/baseline_reward"].append(estimator_inputs["baseline_rewards"].mean().item())
        advantages = compute_advantages(self.args.advantage_estimator, rewards, group_size,
                                        **self.args.advantage_kwargs, **estimator_inputs)
        local = len(inputs)
        start = self.accelerator.process_index * local
        output["advantages"] = advantages[start:start + local].to(output["advantages"].dtype)
        output["advantages"] = self._reweight_by_domain(inputs, rewards[start:start + local], output["advantages"])

        # TRL appended its own advantages for the completions table; show the ones we train with.
        logged = self._logs["advantages"]
        for _ in range(min(len(advantages), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())
        # Correctness per completion: `accuracy_reward` when it is a reward, else the summed reward.
        if _CORRECTNESS_REWARD in self.reward_func_names:
            self._group_scores = rewards_per_func[:, self.reward_func_names.index(_CORRECTNESS_REWARD)]
        else:
            self._group_scores = rewards
        self._log_advantages(mode, advantages, rewards_per_func, rewards, group_size)
        self._log_reward_weights(mode)
        return output

    def _reweight_by_domain(self, inputs, rewards: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
        """`domain_reweighting` (``self.domains``): the per-domain signal is the negative mean reward of the
        domain's completions; upweight scales each completion's advantage (the policy-gradient term, not the KL) by
        its domain factor w_d / q_d."""
        if self.domain_weights is None or not self.model.training:
            return advantages
        index = {name: i for i, name in enumerate(self.domain_weights.domain_names)}
        ids = torch.tensor([index[str(example["domain"])] for example in inputs], device=advantages.device)
        self.domains.record(ids, -rewards.detach())
        return self.domains.apply(ids, advantages)

    def _estimator_inputs(self, lengths: torch.Tensor, output: dict) -> dict[str, Any]:
        inputs = {"completion_lengths": lengths.float(), "max_completion_length": int(self.max_completion_length)}
        if "completion_mean_logps" in get_advantage_estimator(self.args.advantage_estimator).inputs:
            inputs["completion_mean_logps"] = completion_mean_logps(self, output)  # costs a forward when TRL skipped it
        return inputs

    def _log_advantages(self, mode, advantages, rewards_per_func, rewards, group_size) -> None:
        metrics = self._metrics[mode]
        metrics["advantages/mean"].append(advantages.mean().item())
        metrics["advantages/std"].append(advantages.std().item() if advantages.numel() > 1 else 0.0)
        metrics["advantages/min"].append(advantages.min().item())
        metrics["advantages/max"].append(advantages.max().item())
        all_wrong = (self._group_scores.view(-1, group_size) <= 0).all(dim=1)
        metrics["frac_all_wrong_groups"].append(all_wrong.float().mean().item())

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs):
        args = self.args
        if args.policy_loss is None:
            return super()._compute_loss(model, inputs)
        mode = "train" if self.model.training else "eval"
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        per_token_logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1), completion_ids.size(1),
            compute_entropy=True,
        )
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        old_logps = inputs.get("old_per_token_logps")
        old_logps = per_token_logps.detach() if old_logps is None else old_logps
        ratio = torch.exp(per_token_logps - old_logps)

        per_token_loss, loss_metrics = compute_policy_loss(
            args.policy_loss, args.policy_loss_kwargs, ratio=ratio, per_token_logps=per_token_logps,
            old_per_token_logps=old_logps, ref_per_token_logps=inputs.get("ref_per_token_logps"),
            advantages=advantages, mask=mask, entropies=entropies, epsilon_low=self.epsilon_low,
            epsilon_high=self.epsilon_high,
        )
        if self.beta != 0.0:
            ref = inputs["ref_per_token_logps"]
            per_token_kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
            if args.use_bias_correction_kl:
                per_token_kl = per_token_kl * ratio
            per_token_loss = per_token_loss + self.beta * per_token_kl
        training = mode == "train"
        loss = aggregate(self.loss_type, per_token_loss, mask,
                         accumulation=self.current_gradient_accumulation_steps if training else 1.0,
                         max_completion_length=self.max_completion_length,
                         num_items_in_batch=inputs.get("num_items_in_batch"),
                         num_processes=self.accelerator.num_processes,
                         generation_steps=args.steps_per_generation if training else 1)

        metrics = self._metrics[mode]
        metrics["entropy"].append(self._global_masked_mean(entropies, mask))
        if self.beta != 0.0:
            metrics["kl"].append(self._global_masked_mean(per_token_kl, mask))
        for name, values in loss_metrics.items():  # per-token values: their mean over the masked tokens
            metrics[name].append(self._global_masked_mean(values, mask))
        return loss

    def _global_masked_mean(self, values: torch.Tensor, mask: torch.Tensor) -> float:
        return global_masked_mean(self.accelerator, values, mask)
