"""The `reward_invariance` registry: objectives that make a Bradley-Terry reward model hold across domains.

The reward step (`alignment-reward`) minimises TRL's Bradley-Terry loss over all pairs pooled. An objective of this
family changes that using the pairs' `domain` column, so that the reward model is pushed towards what holds in every
domain instead of what is cheapest to fit in the largest or easiest one (the hope: better pairwise accuracy on domains
it has no labels for). Two kinds, declared on the entry (`RewardObjectiveSpec.critic`):

* penalty on per-domain risks (``critic=False``, e.g. `vrex`): per-call inputs ``risks`` (``[D]``, the per-domain
  Bradley-Terry risks of the batch, `per_domain_bt_risks`) and ``step``; all domains are labelled; the trainer adds
  the returned value to TRL's loss.
* domain adaptation with a critic (``critic=True``, e.g. `dial`): per-call inputs ``critic_source`` / ``critic_target``
  (a domain critic's values on the reward model's embeddings of the labelled *source* pairs and of the unlabelled
  *target* pairs, both ``[N, 1]``) and ``step``; the entry's ``target_domains`` name the `domain` values whose pairs
  are unlabelled (left out of the Bradley-Terry loss); the trainer trains the critic (`alignment.trainers.
  domain_critic`) and adds the returned value to the Bradley-Terry loss of the source pairs.

Entries are pure functions on tensors; every keyword-only parameter that is not a per-call input is a
hyper-parameter (`reward_invariance_kwargs`), checked when the recipe is parsed (one call on dummy inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import Registry, Spec


@dataclass(frozen=True)
class RewardObjectiveSpec(Spec):
    # True: the entry reads a domain critic's values on source / target embeddings (inputs critic_source,
    # critic_target) and has `target_domains` and the critic's settings (`alignment.trainers.domain_critic.
    # CRITIC_SETTINGS`) as hyper-parameters; the trainer keeps and trains the critic.
    critic: bool = False


# One dummy value per per-call input, for the parse-time check of an entry's hyper-parameters.
_DUMMY_INPUTS = {
    "risks": lambda: torch.tensor([0.5, 0.7]),
    "critic_source": lambda: torch.tensor([[0.1], [0.3]]),
    "critic_target": lambda: torch.tensor([[0.2]]),
    "step": lambda: 0,
}


def _dummy_call(spec: RewardObjectiveSpec, hparams: dict[str, Any]) -> None:
    # The objective's own value checks run once when the recipe is parsed, not at the first step.
    spec.fn(**{name: _DUMMY_INPUTS[name]() for name in spec.inputs}, **hparams)


REWARD_INVARIANCE: Registry[RewardObjectiveSpec] = Registry(
    "reward_invariance", RewardObjectiveSpec, inputs=("step",), validator=_dummy_call)


def pairwise_bt_losses(rewards_chosen: Tensor, rewards_rejected: Tensor, *, margin: Tensor | None = None) -> Tensor:
    """``[B]`` per-pair Bradley-Terry losses ``-log sigma(r_c - r_r [- m])``, TRL's `RewardTrainer` formula (with its
    optional `margin` column) before its mean over the batch."""
    logits = rewards_chosen - rewards_rejected
    if margin is not None:
        logits = logits - margin
    return -F.logsigmoid(logits)


def per_domain_bt_risks(rewards_chosen: Tensor, rewards_rejected: Tensor, domain_ids: Tensor, *,
                        margin: Tensor | None = None) -> Tensor:
    """The Bradley-Terry risk of each domain present in the batch.

    ``R_e = mean_{i in e} -log sigma(r_c,i - r_r,i [- m_i])``, the same per-pair loss as TRL's `RewardTrainer`
    (with its optional `margin` column), averaged within each domain ``e``.

    Args:
        rewards_chosen, rewards_rejected: ``[B]`` rewards of the chosen and rejected completions.
        domain_ids: ``[B]`` integer domain of each pair (any integers; only the grouping matters).
        margin: optional ``[B]`` margin subtracted inside the sigmoid, as TRL does.

    Returns:
        ``[D]`` risks of the ``D`` distinct domains in the batch, in increasing domain-id order (domains absent from
        the batch have no risk: a penalty over the batch compares only the domains it sees).
    """
    if not (rewards_chosen.shape == rewards_rejected.shape == domain_ids.shape) or rewards_chosen.dim() != 1:
        raise ValueError(f"rewards_chosen, rewards_rejected and domain_ids must all be [B], got "
                         f"{tuple(rewards_chosen.shape)}, {tuple(rewards_rejected.shape)}, {tuple(domain_ids.shape)}.")
    losses = pairwise_bt_losses(rewards_chosen, rewards_rejected, margin=margin)
    _, group = torch.unique(domain_ids, sorted=True, return_inverse=True)
    count = int(group.max()) + 1
    sums = losses.new_zeros(count).index_add(0, group, losses)
    sizes = losses.new_zeros(count).index_add(0, group, torch.ones_like(losses))
    return sums / sizes


def validate_reward_invariance(name: str, hparams: dict[str, Any]) -> None:
    """Check ``reward_invariance`` and its ``reward_invariance_kwargs`` when the recipe is parsed."""
    REWARD_INVARIANCE.validate(name, **hparams)


def invariance_penalty(name: str, hparams: dict[str, Any], *, rewards_chosen: Tensor, rewards_rejected: Tensor,
                       domain_ids: Tensor, step: int, margin: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The weighted penalty of a risk objective ``name`` (``critic=False``) on one batch and the ``[D]`` risks it
    was computed from."""
    risks = per_domain_bt_risks(rewards_chosen, rewards_rejected, domain_ids, margin=margin)
    return REWARD_INVARIANCE.get(name).fn(risks=risks, step=step, **hparams), risks


__all__ = ["REWARD_INVARIANCE", "RewardObjectiveSpec", "pairwise_bt_losses",
           "per_domain_bt_risks", "validate_reward_invariance",
           "invariance_penalty"]
