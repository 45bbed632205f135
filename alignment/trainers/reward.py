"""`AlignmentRewardTrainer`: TRL's `RewardTrainer` plus an optional domain-invariance objective (`reward_invariance`).

With ``reward_invariance`` unset the trainer is TRL's `RewardTrainer` (same loss, same collator, same columns). Set,
the training data must have a `domain` column with at least two domains (checked when the trainer is built); the
column is kept past the Trainer's column pruning and becomes integer ids in the collator. Then, in training:

* a risk objective (`vrex`): `compute_loss` adds ``penalty(per-domain Bradley-Terry risks of the batch)`` to TRL's
  loss;
* a critic objective (`dial`): the pairs of ``target_domains`` are unlabelled target data. The loss is the
  Bradley-Terry loss of the *source* pairs only (TRL's formula, margin and reward centring included) plus the
  objective's domain loss on the critic's values of the source and target completions' embeddings; before it the
  critic (`DomainCritic`, checkpointed as ``domain_critic.pt``) takes its own steps on the detached embeddings.
  TRL's logged `accuracy`/`margin` still cover every pair of the batch; ``source_loss`` is the loss actually
  trained on.

Evaluation is TRL's loss on every pair (an eval set's target pairs are labelled: that is how transfer is measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from trl import RewardTrainer

from ..reward_objectives import REWARD_INVARIANCE, invariance_penalty, pairwise_bt_losses, scored_embeddings
from .collators import domain_id
from .domain_critic import CRITIC_SETTINGS, DOMAIN_CRITIC_FILE, DomainCritic
from .hooks import TrainerHooks

DOMAIN_COLUMN = "domain"
_DOMAIN_IDS = "domain_ids"  # the batch key; never a model input


@dataclass
class DomainIdsCollator:
    """Wraps TRL's preference collator and adds ``domain_ids``: ``[B]`` integer ids of the pairs' `domain` names
    (ids in ``domain_names`` order; a name first seen in a batch, e.g. an eval-only domain, is appended)."""

    base: Callable[[list[dict[str, Any]]], dict[str, Any]]
    domain_names: list[str]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(examples)
        if DOMAIN_COLUMN in examples[0]:
            batch[_DOMAIN_IDS] = torch.tensor([domain_id(self.domain_names, example[DOMAIN_COLUMN])
                                               for example in examples])
        return batch


def training_domains(dataset, objective: str) -> list[str]:
    """The sorted distinct `domain` names of ``dataset``; a clear error without the column or with one domain."""
    columns = getattr(dataset, "column_names", None) or []
    if DOMAIN_COLUMN not in columns:
        raise ValueError(f"`reward_invariance: {objective}` needs a `domain` column in the training data (the "
                         f"penalty compares the Bradley-Terry risk across domains); it has {sorted(columns)}. Add a "
                         "`domain` column (the task suite has one) or unset `reward_invariance`.")
    names = sorted({str(name) for name in dataset[DOMAIN_COLUMN]})
    if len(names) < 2:
        raise ValueError(f"`reward_invariance: {objective}` needs at least two domains in the training data's "
                         f"`domain` column, found {names}: with one domain the penalty is always 0. Train on more "
                         "domains (e.g. `task_domains`) or unset `reward_invariance`.")
    return names


def check_target_domains(domain_names: list[str], target_domains: list[str], objective: str) -> None:
    """A critic objective's ``target_domains`` must be domains of the training data and leave a labelled one."""
    unknown = [name for name in target_domains if name not in domain_names]
    if unknown:
        raise ValueError(f"`reward_invariance_kwargs.target_domains` of `{objective}` names {unknown}, not in the "
                         f"training data's `domain` column {domain_names}. List the domains whose pairs are the "
                         "unlabelled target data (e.g. a `share_mixture` entry's `domain:`).")
    if set(domain_names) <= set(target_domains):
        raise ValueError(f"`reward_invariance_kwargs.target_domains` of `{objective}` covers every training domain "
                         f"{domain_names}: nothing is left to learn preferences from. Keep at least one labelled "
                         "source domain.")


class AlignmentRewardTrainer(TrainerHooks, RewardTrainer):
    """`RewardTrainer` whose loss is TRL's Bradley-Terry loss changed by ``args.reward_invariance`` when set
    (`alignment.configs.AlignmentRewardConfig`; see the module docstring); otherwise TRL's trainer unchanged."""

    def __init__(self, *posargs, **kwargs):
        args = kwargs.get("args")
        self._invariance = getattr(args, "reward_invariance", None)
        self._invariance_kwargs = dict(getattr(args, "reward_invariance_kwargs", None) or {})
        spec = REWARD_INVARIANCE.get(self._invariance) if self._invariance else None
        # Refused before the tokenisation of the data and any training step.
        self.domain_names = (training_domains(kwargs.get("train_dataset"), self._invariance)
                             if self._invariance else [])
        self._uses_critic = bool(spec and spec.critic)
        if self._uses_critic:
            check_target_domains(self.domain_names, list(self._invariance_kwargs["target_domains"]), self._invariance)
        super().__init__(*posargs, **kwargs)
        self.domain_critic: DomainCritic | None = None
        if self._invariance:
            self.kept_columns.append(DOMAIN_COLUMN)
            self.data_collator = DomainIdsCollator(self.data_collator, self.domain_names)
        if self._uses_critic:
            self._target_ids = torch.tensor([self.domain_names.index(name)
                                             for name in self._invariance_kwargs["target_domains"]])
            settings = {**spec.hparams, **self._invariance_kwargs}  # the recipe's values over the defaults
            self.domain_critic = DomainCritic(self.model.config.hidden_size, seed=self.args.seed,
                                              rank=self.args.process_index, device=self.args.device,
                                              **{key: settings[key] for key in CRITIC_SETTINGS})
            self.process_states.register(
                DOMAIN_CRITIC_FILE, self.domain_critic,
                missing_hint=f"the checkpoint was written without `reward_invariance: {self._invariance}`; resume "
                             "with the same setting, or start a new run.")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        domain_ids = inputs.pop(_DOMAIN_IDS, None)  # before TRL passes the batch to the model
        if not self._invariance or domain_ids is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self._uses_critic:
            if not self.model.training:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return self._critic_objective_loss(model, inputs, domain_ids, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)  # as TRL splits them
        penalty, risks = invariance_penalty(
            self._invariance, self._invariance_kwargs, rewards_chosen=rewards_chosen,
            rewards_rejected=rewards_rejected, domain_ids=domain_ids.to(rewards_chosen.device),
            step=self.state.global_step, margin=inputs.get("margin"))
        loss = loss + penalty
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["invariance_penalty"].append(penalty.detach().item())
        self._metrics[mode]["domains_in_batch"].append(float(risks.numel()))
        return (loss, outputs) if return_outputs else loss

    def _critic_objective_loss(self, model, inputs, domain_ids, return_outputs, num_items_in_batch):
        inputs["output_hidden_states"] = True
        _, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)  # TRL's forward and metrics
        rewards = outputs.logits.squeeze(-1)
        rewards_chosen, rewards_rejected = torch.chunk(rewards, chunks=2)  # as TRL splits them
        is_target = torch.isin(domain_ids.to(rewards.device), self._target_ids.to(rewards.device))
        per_pair = pairwise_bt_losses(rewards_chosen, rewards_rejected, margin=inputs.get("margin"))
        # The target pairs' order (their label) is never read: only the source pairs enter the Bradley-Terry loss.
        source_loss = per_pair[~is_target].mean() if (~is_target).any() else per_pair.sum() * 0.0
        loss = source_loss
        if self.args.center_rewards_coefficient is not None:  # label-free, so over every completion, as TRL's
            loss = loss + self.args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)

        unwrapped = self.accelerator.unwrap_model(model)
        pad_token_id = getattr(unwrapped.config, "pad_token_id", None)
        if pad_token_id is None:
            pad_token_id = getattr(self.processing_class, "pad_token_id", None)
        embeddings = scored_embeddings(outputs.hidden_states[-1], inputs["input_ids"], pad_token_id)  # [2B, H]
        completion_is_target = is_target.repeat(2)  # chosen rows, then rejected rows
        source, target = embeddings[~completion_is_target], embeddings[completion_is_target]
        critic_metrics = self.domain_critic.update(source, target)
        if source.shape[0] and target.shape[0]:
            domain_loss = REWARD_INVARIANCE.get(self._invariance).fn(
                critic_source=self.domain_critic.values(source), critic_target=self.domain_critic.values(target),
                step=self.state.global_step, **self._invariance_kwargs)
        else:
            domain_loss = loss.new_zeros(())
        loss = loss + domain_loss.to(loss.dtype)

        metrics = self._metrics["train"]
        metrics["source_loss"].append(source_loss.detach().item())
        metrics["domain_loss"].append(domain_loss.detach().item())
        metrics["target_pair_fraction"].append(is_target.float().mean().item())
        for key, value in critic_metrics.items():
            metrics[key].append(value)
        outputs.hidden_states = None  # not kept past the loss
        return (loss, outputs) if return_outputs else loss
