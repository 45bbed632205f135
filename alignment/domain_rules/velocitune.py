"""Velocitune (Luo et al., ACL 2025, arXiv 2411.14318): the `velocitune` rule (up-weight the slowest learners)."""

from __future__ import annotations

import torch

from .registry import _as_domain_vector, _exponentiated_step, register_domain_update


@register_domain_update("velocitune", inputs=("losses", "initial_losses", "target_losses"))
def velocitune(
    weights: torch.Tensor,
    *,
    step: int,
    losses: torch.Tensor,
    initial_losses: torch.Tensor,
    target_losses: torch.Tensor,
) -> torch.Tensor:
    """Velocitune (Luo et al., ACL 2025, arXiv 2411.14318): up-weight domains that learn slowest.

    V_i = clip((ℓ_t^i − ℓ_target^i) / (ℓ_init^i − ℓ_target^i), 0, 1)   (the normalised remaining gap: larger V
    means slower progress);  w_new = w ⊙ exp(V) / Σ_j w_j exp(V_j).

    Inputs, all [K]: ``losses`` (current per-domain loss ℓ_t), ``initial_losses`` (ℓ_init, at the start of training),
    ``target_losses`` (ℓ_target, which the paper extrapolates per domain from a Chinchilla-law fit
    ``L(N, D) = E + A/N^a + B/D^b`` on proxy runs; fit it offline and pass the result). Each ℓ_init must exceed
    ℓ_target. The paper updates every m steps; call this at that cadence. No hyper-parameters; ``step`` is unused.
    Formula from methods.md §9c [SECONDARY]: no official code was available.
    """
    k = weights.numel()
    current = _as_domain_vector(losses, k, "losses")
    initial = _as_domain_vector(initial_losses, k, "initial_losses")
    target = _as_domain_vector(target_losses, k, "target_losses")
    for name, vector in (("losses", current), ("initial_losses", initial), ("target_losses", target)):
        if not torch.isfinite(vector).all():
            raise ValueError(f"velocitune: `{name}` must be finite, got {vector.tolist()}.")
    gap = initial - target
    if (gap <= 0).any():
        bad = torch.nonzero(gap <= 0).flatten().tolist()
        raise ValueError(f"velocitune: `initial_losses` must exceed `target_losses` in every domain (the velocity "
                         f"divides by their gap); not so for domain(s) {bad}.")
    velocity = ((current - target) / gap).clamp(0.0, 1.0)
    return _exponentiated_step(weights.double(), velocity)
