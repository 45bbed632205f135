"""V-REx on per-domain Bradley-Terry risks (`reward_invariance: vrex`): for training data whose domains are all
labelled; the objective for unlabelled target domains is `dial`."""

from __future__ import annotations

from torch import Tensor

from ..registry import require_in_range
from .registry import REWARD_INVARIANCE


def risk_variance(risks: Tensor) -> Tensor:
    """``Var(R) = mean_e (R_e - mean(R))^2`` over ``[D]`` risks (the population variance: DomainBed's V-REx); 0 for
    fewer than two domains."""
    if risks.numel() < 2:
        return risks.sum() * 0.0  # keeps the graph and the dtype
    return ((risks - risks.mean()) ** 2).mean()


@REWARD_INVARIANCE.register("vrex", inputs=("risks",))
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

