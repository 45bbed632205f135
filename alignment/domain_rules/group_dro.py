"""Group DRO (Sagawa et al., ICLR 2020, arXiv 1911.08731): the `group_dro` rule (online worst-group weights)."""

from __future__ import annotations

import math

import torch

from .registry import _as_domain_vector, _exponentiated_step, register_domain_update


def _check_group_dro(*, step_size: float) -> None:
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not (
            step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"group_dro: `step_size` (η_q of the exponentiated-gradient step) must be a finite number "
                         f"> 0, got {step_size!r}; the official code's default is 0.01.")


@register_domain_update("group_dro", inputs=("losses",), check=_check_group_dro)
def group_dro(weights: torch.Tensor, *, step: int, losses: torch.Tensor, step_size: float = 0.01) -> torch.Tensor:
    """Group DRO (Sagawa et al., ICLR 2020, arXiv 1911.08731): exponentiated-gradient ascent on the group losses.

    q ← q ⊙ exp(η_q·ℓ) / Σ_g q_g exp(η_q·ℓ_g)   (= softmax(log q + η_q·ℓ)),

    so the weights drift toward the domains with the highest loss; training on Σ_g q_g ℓ_g (upweight mode) then
    minimises the worst-group loss. Input ``losses`` [K]: this step's per-domain mean training losses; a NaN (domain
    absent from the batch) counts as 0, i.e. no change to its weight, as the official code's zero group average.
    Hyper-parameter ``step_size`` (η_q, the official ``--robust_step_size``, default 0.01). ``step`` is unused.

    Paper vs code: the official ``loss.py`` (``kohpangwei/group_DRO``, ``LossComputer.compute_robust_loss``) does
    ``adv_probs = adv_probs * exp(step_size * group_loss); adv_probs /= adv_probs.sum()`` with every group's mean loss
    on the minibatch, which this follows. The paper's Algorithm 1 (our reading, from memory; not re-checked against
    the PDF) samples one group g per step and updates only q_g with that example's loss. Not carried over from the
    code: its generalisation adjustment (``adj / sqrt(n_g)`` added to the losses, off by default) and
    ``--use_normalized_loss`` (losses divided by their sum). In the code the weights are updated before the
    minibatch's loss is weighted; online here, a step's losses set the weights used from the next step on, and a
    domain absent from a step keeps its previous loss (the online loop's convention) instead of 0.
    """
    current = _as_domain_vector(losses, weights.numel(), "losses")
    if torch.isinf(current).any():
        raise ValueError(f"group_dro: `losses` must be finite (NaN marks an absent domain), got {current.tolist()}.")
    return _exponentiated_step(weights.double(), step_size * current.nan_to_num(0.0))
