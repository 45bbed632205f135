"""APA, Advantage-Induced Policy Alignment (Zhu et al., arXiv 2306.02231), as a policy loss (``policy_loss: apa``).

Paper (methods sheet §10m): per sampled (prefix s, token a), regress the policy's log-ratio on the scaled advantage::

    L_APA = E[(log pi_theta(a|s) - log pi_init(a|s) - A(s, a) / lam)^2]

which moves log pi toward the KL-regularised optimum ``pi* ∝ pi_init exp(A / lam)`` (partition function taken as 1);
``lam`` is the single KL-control knob and there is no ratio clipping.

Official code (`microsoft/RLHF-APA`, a trlX fork, `trlx/models/modeling_sppo.py` ``SPPOConfig.loss`` with
``loss_str="square"``)::

    sq_loss = sum(((logprobs - adv_coeff_sq * advantages - old_logprobs.detach()) * mask) ** 2) / n

Paper vs code:

* **Which log-ratio.** The paper anchors at pi_init; the code at ``old_logprobs``, the rollout (sampling) policy's
  log-probs, with the pull toward pi_init coming from trlX's KL penalty in the rewards (``init_kl_coef`` 0.05,
  adaptive). We follow the code by default (``reference="old"``: log pi_theta - log pi_old, the trainer's
  ``old_per_token_logps``); ``reference="init"`` is the paper's form, with TRL's reference model as pi_init, which TRL
  only runs when ``beta`` > 0 (``ref_per_token_logps``): without it the run fails at start-up. With ``beta`` > 0 the
  trainer also adds TRL's KL term ``beta * KL`` to this loss, as for every policy loss (the code's KL sits in the
  rewards instead).
* **The scale.** The code multiplies the advantage by ``adv_coeff_sq`` = 1 / lam (10 in its APA runs, i.e. lam =
  0.1, our default); no 1/2 factor in either.
* **The advantages.** The code's are whitened per-token GAE advantages from a critic; here they are whatever the
  trainer's advantage estimator gives, normally one group-relative advantage per completion broadcast to its tokens.
* **The reduction.** The code takes the token mean over the minibatch (``/ n``); here it is TRL's ``loss_type``
  aggregation (``bnpo`` or ``dapo`` are the token means).
"""

from __future__ import annotations

import torch

from ..registry import require_choice, require_positive
from .registry import POLICY_LOSSES

REFERENCES = ("old", "init")


@POLICY_LOSSES.register("apa")
def apa(*, per_token_logps: torch.Tensor, old_per_token_logps: torch.Tensor, advantages: torch.Tensor,
        ref_per_token_logps: torch.Tensor | None = None, lam: float = 0.1,
        reference: str = "old") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """APA's squared error between the log-ratio and advantage / ``lam``, per token ``[B, T]``.

    ``loss_t = (log pi_theta(o_t) - log pi_ref(o_t) - A / lam)^2`` with pi_ref the rollout policy (``reference:
    old``, the official code) or the initial policy (``reference: init``, the paper; needs ``beta`` > 0). Its gradient
    ``2 (log-ratio - A / lam) grad log pi_theta`` raises the log-prob of a token with A > 0 until the log-ratio reaches
    A / lam. Metric: ``apa/log_ratio_mean``.
    """
    require_positive("lam", lam)
    require_choice("reference", reference, REFERENCES)
    anchor = old_per_token_logps if reference == "old" else ref_per_token_logps
    if anchor is None:
        raise ValueError("policy_loss 'apa' with `reference: init` regresses on log pi_theta - log pi_init, which "
                         "needs TRL's reference log-probs (`ref_per_token_logps`); TRL computes them only with "
                         "`beta` > 0. Set `beta`, or use `reference: old` (the official code's log-ratio).")
    log_ratio = per_token_logps - anchor.detach()
    return (log_ratio - advantages / lam) ** 2, {"apa/log_ratio_mean": log_ratio}
