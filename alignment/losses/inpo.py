"""INPO: Iterative Nash Policy Optimization, the per-round square loss against π_ref and the round's policy π_t."""

from __future__ import annotations

import torch

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


@register_preference_loss("inpo", requires=("round_chosen_logps", "round_rejected_logps"))
def inpo_loss(
    batch: PreferenceBatch, *, eta: float = 0.0075, tau: float = 0.0025
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """INPO (Zhang et al., ICLR 2025, arXiv 2407.00617): regress the policy's log-odds of the pair onto a geometric
    mix of π_ref's and π_t's, shifted by ``1/(2η)``.

    With ``Δ_π = log π(y_w) − log π(y_l)`` (sequence sums over completion tokens), ``Δ_ref`` the same under the fixed
    reference (``batch.ref_*_logps``, the starting policy) and ``Δ_t`` under π_t, the policy of round t that sampled
    the pair (``batch.round_chosen_logps`` / ``round_rejected_logps``, ``[B]`` columns written by the pair generator
    with ``record_policy_logps: true``)::

        h = Δ_π − (τ/η)·Δ_ref − (1 − τ/η)·Δ_t
        L = (h − 1/(2η))²                                     shape [B]

    Its minimiser over pairs sampled from π_t and ordered by the preference oracle is the online-mirror-descent step
    ``π_{t+1}(y) ∝ π_t(y)^{1−τ/η} · π_ref(y)^{τ/η} · exp(P(y ≻ π_t)/η)``. Limits: ``τ = η`` is IPO with ``β = η``
    against π_ref (``(Δ_π − Δ_ref − 1/(2η))²``, π_t drops out); ``τ = 0`` is IPO against π_t (no pull to π_ref).

    Hyper-parameters, in the authors' code's convention: ``eta`` (> 0) is the *inverse* mirror-descent step (the
    target is ``1/(2η)``, as IPO's ``1/(2β)``), ``tau`` (0 ≤ τ ≤ η) the KL coefficient toward π_ref; the code's
    ``ratio`` is ``τ/η``. Defaults ``eta=0.0075``, ``tau=0.0025`` (``ratio = 1/3``) are the INPO trainer defaults in the
    code released with the method (`INPOConfig`/`MNPOConfig` in github.com/smiles724/MNPO, "derived from the original
    INPO codebase": ``ratio: 1/3``, ``eta: 0.0075``).

    Paper vs code: the paper writes the update with a step size η_p (``π_t^{1−η_p τ} π_ref^{η_p τ} exp(η_p P)``), so
    its loss reads ``(Δ_π − η_p τ Δ_ref − (1 − η_p τ) Δ_t − η_p/2)²`` (the methods sheet's §10i form). The code's
    ``eta`` is ``1/η_p``: the same loss with ``η_p = 1/eta``. This follows the code (three implementations agree:
    MNPO's `mnpo_trainer.py` with one history model, its INPO trainer, and a tabular INPO in a COMAL toy
    experiment). The paper's own text was not reachable from here; the equivalence is algebraic, not quoted. A
    third-party "INPOTrainer" regressing each side onto ``(P̂ − ½)/β`` is SPPO, not INPO, and was not followed.

    The round columns are plain sums recorded at generation: a `token_weighting` scales Δ_π and Δ_ref but not Δ_t,
    so the two do not compose as other losses do (the mix is then of differently weighted log-odds).

    Metrics: ``inpo/h`` (the regressed quantity) and ``inpo/round_logratio`` (``Δ_t``) per example.
    """
    require_positive("eta", eta)
    if not 0 <= tau <= eta:
        raise ValueError(f"`tau` must be in [0, eta] = [0, {eta}] (the mix weight tau/eta is a fraction), got {tau}.")
    ratio = tau / eta
    delta_pi = batch.chosen_logps_sum - batch.rejected_logps_sum
    delta_ref = batch.ref_chosen_logps_sum - batch.ref_rejected_logps_sum
    # π_t's log-probs are data (recorded when π_t sampled the pair): no gradient, whatever the caller passed.
    delta_t = (batch.round_chosen_logps - batch.round_rejected_logps).detach().to(delta_pi.dtype)
    h = delta_pi - ratio * delta_ref - (1 - ratio) * delta_t
    return (h - 0.5 / eta).pow(2), {"inpo/h": h.detach(), "inpo/round_logratio": delta_t}
