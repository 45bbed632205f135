"""DoReMi (Xie et al., NeurIPS 2023, arXiv 2305.10429): the `doremi` rule and its per-token excess loss."""

from __future__ import annotations

import math

import torch

from .registry import _as_domain_vector, _exponentiated_step, _smooth, register_domain_update


def clipped_excess_loss(token_losses: torch.Tensor, ref_token_losses: torch.Tensor,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """DoReMi's per-token excess loss max(ℓ_θ(x_t) − ℓ_ref(x_t), 0), zero where ``mask`` is 0; [B, T], detached.

    ``token_losses`` / ``ref_token_losses``: [B, T] per-token losses of the proxy and the reference model; ``mask``
    (same shape) selects the tokens that count. The per-domain score λ_i is the mean of this over the tokens of
    domain i: clipping is per token, then averaged (paper Alg. 1 and the official code), which is ≥ the clipped mean
    excess. The online loop (`alignment.trainers.domain_reweighting.OnlineDomainWeights`) takes per-example sums of
    it and divides by the domain's token count once per optimizer step, over micro-batches and ranks, and hands the
    result to `doremi` as ``excess_loss``.
    """
    if token_losses.shape != ref_token_losses.shape:
        raise ValueError(f"token_losses {tuple(token_losses.shape)} and ref_token_losses "
                         f"{tuple(ref_token_losses.shape)} must have the same shape.")
    excess = (token_losses.detach() - ref_token_losses.detach()).clamp(min=0)
    return excess if mask is None else excess * mask


def _check_doremi(*, eta: float, eps: float) -> None:
    if not (isinstance(eta, (int, float)) and eta > 0 and math.isfinite(eta)):
        raise ValueError(f"doremi: `eta` (step size of the exponentiated-gradient update) must be > 0, got {eta!r}.")
    if not (isinstance(eps, (int, float)) and 0 <= eps <= 1):
        raise ValueError(f"doremi: `eps` (smoothing toward uniform) must be in [0, 1], got {eps!r}; the paper uses "
                         "1e-3.")


@register_domain_update(
    "doremi", inputs=("excess_loss", "losses", "ref_losses", "previous_excess_loss"), check=_check_doremi
)
def doremi(
    weights: torch.Tensor,
    *,
    step: int,
    excess_loss: torch.Tensor | None = None,
    losses: torch.Tensor | None = None,
    ref_losses: torch.Tensor | None = None,
    previous_excess_loss: torch.Tensor | None = None,
    eta: float = 1.0,
    eps: float = 1e-3,
) -> torch.Tensor:
    """DoReMi (Xie et al., NeurIPS 2023, arXiv 2305.10429): Group-DRO exponentiated-gradient step on excess loss.

    λ_i = max(excess_i, 0);  α' = softmax(log α + η·λ);  α_new = (1 − ε)·α' + ε/K.

    Inputs (per-domain, shape [K]), one of:
      - ``excess_loss``: λ before clipping, e.g. per-domain means of `clipped_excess_loss` (per-token clipping, as in the paper
        and the official code; then the clip here is a no-op);
      - ``losses`` and ``ref_losses``: per-domain mean losses of the proxy and the reference model; the excess
        ``losses − ref_losses`` is clipped per domain.
    NaN entries mark domains absent from the batch: as in the official code they reuse the previous score
    (``previous_excess_loss`` [K]), or 0 (no change to that domain's logit) when none is given.

    Hyper-parameters: ``eta`` (η, default 1), ``eps`` (smoothing c, default 1e-3 as in the paper and its run scripts;
    the code's argument default is 1e-4, and the README's claim that the paper uses 1 confuses ε with η —
    methods.md cross-check 6). The final weights are the average over steps (`DomainWeightState.average`), not the
    last ones. ``step`` is unused.
    """
    k = weights.numel()
    if excess_loss is not None:
        if losses is not None or ref_losses is not None:
            raise ValueError("doremi: pass either `excess_loss` or `losses` + `ref_losses`, not both.")
        excess = _as_domain_vector(excess_loss, k, "excess_loss")
    elif losses is not None and ref_losses is not None:
        excess = _as_domain_vector(losses, k, "losses") - _as_domain_vector(ref_losses, k, "ref_losses")
    else:
        raise ValueError("doremi needs per-domain `excess_loss` [K], or both `losses` and `ref_losses` [K].")
    if torch.isinf(excess).any():
        raise ValueError(f"doremi: the excess loss must be finite (NaN marks an absent domain), got {excess.tolist()}.")
    fallback = (torch.zeros(k, dtype=torch.float64) if previous_excess_loss is None
                else _as_domain_vector(previous_excess_loss, k, "previous_excess_loss"))
    scores = torch.where(torch.isnan(excess), fallback, excess).clamp(min=0)
    return _smooth(_exponentiated_step(weights.double(), eta * scores), eps)
