"""DoGE (Fan, Pagliardini, Jaggi, ICML 2024, arXiv 2310.15393): the `doge` rule (gradient alignment with targets)."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .registry import _exponentiated_step, _smooth, register_domain_update


def _check_doge(*, mu: float, dw_min: float, dw_max: float, eps: float, include_self: bool, normalize: bool,
                target_domains: Sequence[int] | None) -> None:
    if not mu > 0:
        raise ValueError(f"doge: `mu` (Bregman step scale; scores are divided by it) must be > 0, got {mu!r}.")
    if not dw_min <= dw_max:
        raise ValueError(f"doge: need `dw_min` <= `dw_max` (score clip bounds, in units of the learning rate), got "
                         f"{dw_min!r} > {dw_max!r}.")
    if not 0 <= eps <= 1:
        raise ValueError(f"doge: `eps` (smoothing toward uniform) must be in [0, 1], got {eps!r}.")
    if target_domains is not None and len(target_domains) == 0:
        raise ValueError("doge: `target_domains` must list at least one domain index, or be unset (all domains).")


@register_domain_update(
    "doge", inputs=("grads", "gram", "target_grads", "target_gram", "learning_rate"), check=_check_doge
)
def doge(
    weights: torch.Tensor,
    *,
    step: int,
    learning_rate: float,
    grads: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    target_grads: torch.Tensor | None = None,
    target_gram: torch.Tensor | None = None,
    mu: float = 0.01,
    dw_min: float = 0.0,
    dw_max: float = 5.0,
    eps: float = 0.0,
    include_self: bool = True,
    normalize: bool = True,
    target_domains: Sequence[int] | None = None,
) -> torch.Tensor:
    """DoGE (Fan, Pagliardini, Jaggi, ICML 2024, arXiv 2310.15393): reweight by gradient alignment with the targets.

    W_i = Σ_{j∈target} ⟨g_i, g_j⟩;  s_i = clip(η_t·W_i / (mean_i ‖g_i‖ + 1e-6), η_t·dw_min, η_t·dw_max);
    α_new = (1 − ε)·softmax(log α + s/μ) + ε/K.

    Inputs: ``learning_rate`` η_t (the proxy's current learning rate) and the K training domains' gradients, either
    ``grads`` [K, P] (flattened, after clipping to max_grad_norm as in the official code) or their inner products
    ``gram`` [K, K] (norms are read off its diagonal). Targets:
      - default (universal setting): the training domains themselves, or the subset ``target_domains`` (indices);
      - out-of-domain: ``target_grads`` [M, P] (needs ``grads``) or ``target_gram`` [K, M] = ⟨g_i, g_target_m⟩.

    Self term (methods.md cross-check 7): with in-set targets, ``include_self=True`` (default) keeps ⟨g_i, g_i⟩ —
    the paper's W_i = ⟨∇ℓ_i, Σ_{j∈[k]} ∇ℓ_j⟩, the first-order decrease of the target loss from a step on domain i
    (our reading of the paper, from memory; not re-checked against the PDF); ``include_self=False`` drops it as the
    official code (`src/trainer.py`) does. ``normalize`` divides by the mean
    gradient norm, as the code does (set False for the raw inner products, as in methods.md §11).

    Defaults from the official ``config/doge.json``: μ=0.01 (argument default 0.05), dw_min=0, dw_max=5, ε=0.
    Final weights: the average over steps (`DomainWeightState.average`). ``step`` is unused.
    """
    k = weights.numel()
    learning_rate = float(learning_rate)
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"doge: `learning_rate` (the proxy's current learning rate η_t) must be > 0, got "
                         f"{learning_rate!r}.")
    if (grads is None) == (gram is None):
        raise ValueError("doge needs exactly one of `grads` [K, P] or `gram` [K, K] for the K training domains.")
    if grads is not None:
        grads = torch.as_tensor(grads).double()
        if grads.ndim != 2 or grads.shape[0] != k:
            raise ValueError(f"doge: `grads` must be [K, P] = [{k}, P], got {tuple(grads.shape)}.")
        gram = grads @ grads.T
    else:
        gram = torch.as_tensor(gram).double()
        if gram.shape != (k, k):
            raise ValueError(f"doge: `gram` must be [K, K] = [{k}, {k}], got {tuple(gram.shape)}.")
    if target_grads is not None and target_gram is not None:
        raise ValueError("doge: pass at most one of `target_grads` and `target_gram`.")
    out_of_set = target_grads is not None or target_gram is not None
    if out_of_set and target_domains is not None:
        raise ValueError("doge: `target_domains` selects targets among the training domains; it cannot be combined "
                         "with out-of-domain `target_grads` / `target_gram`.")

    if target_grads is not None:
        if grads is None:
            raise ValueError("doge: `target_grads` needs the training `grads` (not `gram`); or pass `target_gram`.")
        target_grads = torch.as_tensor(target_grads).double()
        if target_grads.ndim != 2 or target_grads.shape[1] != grads.shape[1]:
            raise ValueError(f"doge: `target_grads` must be [M, P] with P = {grads.shape[1]}, got "
                             f"{tuple(target_grads.shape)}.")
        alignment = (grads @ target_grads.T).sum(dim=1)
    elif target_gram is not None:
        target_gram = torch.as_tensor(target_gram).double()
        if target_gram.ndim != 2 or target_gram.shape[0] != k:
            raise ValueError(f"doge: `target_gram` must be [K, M] = [{k}, M], got {tuple(target_gram.shape)}.")
        alignment = target_gram.sum(dim=1)
    else:
        targets = list(range(k)) if target_domains is None else [int(j) for j in target_domains]
        if any(j < 0 or j >= k for j in targets) or len(set(targets)) != len(targets):
            raise ValueError(f"doge: `target_domains` must be distinct indices in [0, {k}), got {list(targets)}.")
        in_target = torch.zeros(k, dtype=torch.bool)
        in_target[targets] = True
        alignment = gram[:, in_target].sum(dim=1)
        if not include_self:
            alignment = alignment - torch.where(in_target, gram.diagonal(), torch.zeros(k, dtype=torch.float64))

    scores = learning_rate * alignment
    if normalize:
        scores = scores / (gram.diagonal().clamp(min=0).sqrt().mean() + 1e-6)
    scores = scores.clamp(min=learning_rate * dw_min, max=learning_rate * dw_max)
    return _smooth(_exponentiated_step(weights.double(), scores / mu), eps)
