"""ScaleBiO (Pan et al., ACL 2025, arXiv 2406.19976): the `scalebio` rule (the sampling-weight step of its first-order
penalty method for bilevel data reweighting)."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .registry import (_as_domain_vector, _split_targets, _target_indices, _with_target_share,
                       register_domain_update)


def _check_scalebio(*, target_domains: Sequence[int], step_size: float, penalty: float, target_share: float) -> None:
    _target_indices(target_domains, 0, "scalebio")
    for name, value, what in (("step_size", step_size, "the learning rate of λ, the logits of the weights"),
                              ("penalty", penalty, "α, the penalty multiplier")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
            raise ValueError(f"scalebio: `{name}` ({what}) must be a finite number > 0, got {value!r}.")
    if isinstance(target_share, bool) or not isinstance(target_share, (int, float)) or not 0 <= target_share < 1:
        raise ValueError(f"scalebio: `target_share` (the fixed weight kept on the validation domains; 0 = never train "
                         f"on them, as the paper) must be in [0, 1), got {target_share!r}.")


def softmax_logit_gradient(probs: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """∂/∂λ of Σ_i p_i(λ)·d_i with p = softmax(λ): J(p)·d = p ⊙ (d − ⟨p, d⟩), J = diag(p) − p pᵀ. [K] -> [K]."""
    return probs * (d - (probs * d).sum())


@register_domain_update("scalebio", inputs=("grads", "loss_gap"), check=_check_scalebio)
def scalebio(
    weights: torch.Tensor,
    *,
    step: int,
    target_domains: Sequence[int],
    grads: torch.Tensor | None = None,
    loss_gap: torch.Tensor | None = None,
    step_size: float = 1.0,
    penalty: float = 10.0,
    target_share: float = 0.0,
) -> torch.Tensor:
    """ScaleBiO (Pan et al., arXiv 2406.19976): a gradient step on the logits λ of the sampling weights p = softmax(λ).

    The bilevel problem min_λ L1(w*(λ)) s.t. w*(λ) = argmin_w L2(w, λ) = Σ_i p_i·ℓ_i(w) (L1: validation loss, ℓ_i:
    mean training loss of source i) becomes, with a penalty α, min_{λ,w} max_u L1(w) + α·(L2(w, λ) − L2(u, λ)). Its
    λ-gradient and our step (G: the generic, non-validation domains; p the current weights over G):

        d_i = α·(ℓ_i(w) − ℓ_i(u))                           (``loss_gap`` = ℓ(w) − ℓ(u), [K])
        ∇_λ = J(p)·d = p ⊙ (d − ⟨p, d⟩)
        p'  = softmax(λ − η·∇_λ),  λ = log p                (``step_size`` η)

    Exact for plain gradient descent on λ: softmax is shift-invariant and Σ_i (J d)_i = 0, so λ = log p loses nothing.

    Online (``grads`` [K, P], the input the training loop gives): our one model is the paper's lower-level model u
    (trained on the p-weighted training loss); w, a second model trained on L1 + α·L2, does not exist here. We take
    for w one gradient step of the validation loss from u with step 1/α, w = u − g_val/α, whose loss gap to first
    order is α·(ℓ_i(w) − ℓ_i(u)) ≈ −⟨g_i, g_val⟩, so

        d_i = −⟨g_i, ḡ_val⟩,   ḡ_val = mean of the ``target_domains`` rows of ``grads``

    (α cancels; ``penalty`` only scales ``loss_gap``). Then the step raises the weight of sources whose gradient
    points along the validation gradient, like DoGE/DGA but on the softmax logits (p ⊙ (a − ⟨p, a⟩) instead of EG).

    Paper / official code (``2003pro/ScaleBiO`` and ``research4pan/scalebio``, ``python/minmax.py``,
    ``python/samp_p.py``) vs ours:
      - code: u and w are two full models updated every step (AdamW, ``lr_u = lr_w = 1e-5``), and λ.grad is
        autograd of α·(Σ_i p_i·mean loss of w on source i − same for u) on the same minibatch (``SampProb``:
        per-example weight p_i/n_i), i.e. exactly ``loss_gap`` above; ours with ``loss_gap`` reproduces that step;
      - online we have no w (it would need a second model copy and its optimizer): the ``grads`` form replaces
        ℓ(w) − ℓ(u) by the one-step, identity-Hessian approximation above. The code's w accumulates the validation
        pull over all steps (and its Hessian term), ours is a fresh step from the current model every update;
      - code: λ is updated by AdamW (``lr_lambda`` 1e-2 in run_gpt2.sh, α = 10, τ = 1 i.e. constant α); ours is plain
        gradient descent on λ (a pure rule keeps no optimizer state), so ``step_size`` has no equivalent default:
        ours is 1.0; ``penalty`` default α = 10 from run_gpt2.sh;
      - validation set: in the code a separate file never trained on by u; here ``target_domains`` of the training
        data with ``target_share`` (default 0 = not trained on; use ``domain_reweighting_mode: upweight`` so that
        their gradient stays fresh, see `dga`). LISA (random layer freezing) is not applied: which parameters the
        gradients cover is ``domain_doge_*``.
    ``step`` is unused.
    """
    k = weights.numel()
    if (grads is None) == (loss_gap is None):
        raise ValueError("scalebio needs exactly one of `grads` [K, P] (online) or `loss_gap` [K] = ℓ(w) − ℓ(u).")
    if grads is not None:
        in_target, alignment = _split_targets(grads, target_domains, k, "scalebio")
        d = -alignment
    else:
        in_target = torch.zeros(k, dtype=torch.bool)
        in_target[_target_indices(target_domains, k, "scalebio")] = True
        gap = _as_domain_vector(loss_gap, k, "loss_gap")
        if not torch.isfinite(gap[~in_target]).all():
            raise ValueError(f"scalebio: `loss_gap` must be finite on the training domains, got {gap.tolist()}.")
        d = penalty * gap
    generic = weights.double()[~in_target]
    if not generic.sum() > 0:
        raise ValueError("scalebio: the current weights put no mass on the training (non-validation) domains; give "
                         "them non-zero initial weights (`domain_initial_weights`).")
    probs = generic / generic.sum()
    logits = torch.log(probs) - step_size * softmax_logit_gradient(probs, d[~in_target])
    return _with_target_share(torch.softmax(logits, dim=0), in_target, target_share)
