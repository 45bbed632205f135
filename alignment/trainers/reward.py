"""`AlignmentRewardTrainer`: TRL's `RewardTrainer` plus an optional domain-invariance penalty (`reward_invariance`).

With ``reward_invariance`` unset the trainer is TRL's `RewardTrainer` (same loss, same collator, same columns). Set,
the training data must have a `domain` column with at least two domains (checked when the trainer is built); the
column is kept past the Trainer's column pruning, becomes integer ids in the collator, and `compute_loss` adds
``penalty(per-domain Bradley-Terry risks of the batch)`` (`alignment.reward_objectives`) to TRL's loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from trl import RewardTrainer

from ..reward_objectives import invariance_penalty
from .collators import domain_id
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


class AlignmentRewardTrainer(TrainerHooks, RewardTrainer):
    """`RewardTrainer` whose loss is TRL's Bradley-Terry loss ``+ penalty`` when ``args.reward_invariance`` is set
    (`alignment.configs.AlignmentRewardConfig`); otherwise TRL's trainer unchanged."""

    def __init__(self, *posargs, **kwargs):
        args = kwargs.get("args")
        self._invariance = getattr(args, "reward_invariance", None)
        self._invariance_kwargs = dict(getattr(args, "reward_invariance_kwargs", None) or {})
        # Refused before the tokenisation of the data and any training step.
        self.domain_names = (training_domains(kwargs.get("train_dataset"), self._invariance)
                             if self._invariance else [])
        super().__init__(*posargs, **kwargs)
        if self._invariance:
            self.kept_columns.append(DOMAIN_COLUMN)
            self.data_collator = DomainIdsCollator(self.data_collator, self.domain_names)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        domain_ids = inputs.pop(_DOMAIN_IDS, None)  # before TRL passes the batch to the model
        if not self._invariance or domain_ids is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
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
