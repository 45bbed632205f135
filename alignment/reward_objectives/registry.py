"""Domain-invariance objectives for Bradley-Terry reward models (`reward_invariance` in a reward recipe).

The reward step (`alignment-reward`) minimises TRL's Bradley-Terry loss over all pairs pooled. An invariance
objective adds a penalty computed from the same rewards grouped by the pair's `domain`, so that the reward model is
pushed towards what holds in every training domain instead of what is cheapest to fit in the largest or easiest one
(the hope: better pairwise accuracy on domains it never trained on).

One registry (`REWARD_INVARIANCE`, on the kernel `alignment.registry`), pure functions on tensors::

    @REWARD_INVARIANCE.register("name")
    def name(*, risks: Tensor, step: int, penalty_weight: float = 1.0, ...) -> Tensor:  # scalar, already weighted

``risks`` (``[D]``, the per-domain Bradley-Terry risks of the batch, `per_domain_bt_risks`) and ``step`` (the
optimizer step) are the per-call inputs; every other keyword-only parameter is a hyper-parameter
(`reward_invariance_kwargs`). The trainer adds the returned value to TRL's loss.

Why V-REx and not the domain-invariant reward model paper. The paper that is explicitly about domain-invariant reward
models is DIAL (Wu & Choudhury, "Aligning LLMs with Domain Invariant Reward Models", arXiv 2501.00911, code
github.com/portal-cornell/dial, `src/dial/loss.py::domain_adaptation_contrastive_loss`): Bradley-Terry loss on a
labelled *source* domain plus a Wasserstein critic (WDGRL, an external `da` package with its own critic network and
optimizer) between the source embeddings and the embeddings of *unlabelled target-domain* pairs. That is domain
adaptation: it needs the target domain's inputs during training, and an adversarial critic outside the reward
model. Here the target domains are held out entirely (no inputs at training time), so the objective implemented is
the standard invariance objective for that setting, V-REx (Krueger et al. 2021, "Out-of-Distribution Generalization
via Risk Extrapolation", arXiv 2003.00688), applied to the per-domain Bradley-Terry risks. DIAL would be a second
entry of this registry that also takes embeddings and unlabelled target pairs; it is not built.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import Registry, require_in_range

def _dummy_call(spec, hparams: dict[str, Any]) -> None:
    # The objective's own value checks run once when the recipe is parsed, on two dummy domain risks, not at the
    # first step.
    spec.fn(risks=torch.tensor([0.5, 0.7]), step=0, **hparams)


REWARD_INVARIANCE: Registry = Registry("reward_invariance", inputs=("risks", "step"), validator=_dummy_call)


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
    logits = rewards_chosen - rewards_rejected
    if margin is not None:
        logits = logits - margin
    losses = -F.logsigmoid(logits)
    _, group = torch.unique(domain_ids, sorted=True, return_inverse=True)
    count = int(group.max()) + 1
    sums = losses.new_zeros(count).index_add(0, group, losses)
    sizes = losses.new_zeros(count).index_add(0, group, torch.ones_like(losses))
    return sums / sizes


def risk_variance(risks: Tensor) -> Tensor:
    """``Var(R) = mean_e (R_e - mean(R))^2`` over ``[D]`` risks (the population variance: DomainBed's V-REx); 0 for
    fewer than two domains."""
    if risks.numel() < 2:
        return risks.sum() * 0.0  # keeps the graph and the dtype
    return ((risks - risks.mean()) ** 2).mean()


@REWARD_INVARIANCE.register("vrex")
def vrex(*, risks: Tensor, step: int = 0, penalty_weight: float = 1.0, anneal_steps: int = 0) -> Tensor:
    """V-REx: the variance of the per-domain Bradley-Terry risks, weighted (Krueger et al. 2021, arXiv 2003.00688).

    ``penalty = lambda_t * Var_e(R_e)``, ``lambda_t = 1`` while ``step < anneal_steps``, then ``penalty_weight``;
    the trainer's loss is TRL's Bradley-Terry loss (all pairs pooled) ``+ penalty``.

    Args:
        risks: ``[D]`` per-domain risks of the batch (`per_domain_bt_risks`).
        step: the optimizer step (0-based: `state.global_step` before the update).
        penalty_weight: ``lambda`` (>= 0; 0 turns the penalty off). The paper's ``beta``.
        anneal_steps: steps with weight 1 before ``penalty_weight`` applies (DomainBed's
            ``vrex_penalty_anneal_iters``, the official code's ``penalty_anneal_iters``).

    Returns:
        scalar ``lambda_t * Var(R)``.

    Paper vs code (followed: DomainBed, `domainbed/algorithms.py::VREx`, which generalises the official two-domain
    code to D domains):

    * paper eq. (8): ``R_V-REx = beta * Var(R_1..R_m) + sum_e R_e`` (sum of risks, variance unspecified);
      official code (github.com/capybaralet/REx_code_release, `InvariantRiskMinimization/colored_mnist/main.py`,
      ``--mse``): two domains, ``(R_1 - R_2)^2`` (= 4x the population variance), ERM term ``R_1 + R_2``; DomainBed:
      ``mean(R) + lambda * mean((R - mean R)^2)``. Here the ERM term is TRL's pooled loss (equal to ``mean(R)``
      only when the batch's domains are equally represented) so that an unset or zero penalty is TRL exactly.
    * both codes use weight 1.0 before the anneal step; the official code then divides the whole loss by ``lambda``
      when ``lambda > 1`` and DomainBed resets Adam at that step; neither is done here (a recipe scales the learning
      rate instead).
    * the risks are those of the domains present in the micro-batch on each process (DomainBed draws one minibatch
      per domain per step); with fewer than two domains in a micro-batch the penalty is 0.
    """
    require_in_range("reward_invariance_kwargs.penalty_weight", penalty_weight, 0.0, float("inf"))
    if isinstance(anneal_steps, bool) or not isinstance(anneal_steps, int) or anneal_steps < 0:
        raise ValueError(f"`reward_invariance_kwargs.anneal_steps` must be an integer >= 0, got {anneal_steps!r}.")
    weight = penalty_weight if step >= anneal_steps else 1.0
    return weight * risk_variance(risks)


def validate_reward_invariance(name: str, hparams: dict[str, Any]) -> None:
    """Check ``reward_invariance`` and its ``reward_invariance_kwargs`` when the recipe is parsed."""
    REWARD_INVARIANCE.validate(name, **hparams)


def invariance_penalty(name: str, hparams: dict[str, Any], *, rewards_chosen: Tensor, rewards_rejected: Tensor,
                       domain_ids: Tensor, step: int, margin: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The weighted penalty of objective ``name`` on one batch and the ``[D]`` risks it was computed from."""
    risks = per_domain_bt_risks(rewards_chosen, rewards_rejected, domain_ids, margin=margin)
    return REWARD_INVARIANCE.get(name).fn(risks=risks, step=step, **hparams), risks


__all__ = ["REWARD_INVARIANCE", "per_domain_bt_risks", "risk_variance", "vrex", "validate_reward_invariance",
           "invariance_penalty"]
