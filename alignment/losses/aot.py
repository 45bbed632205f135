"""AOT: alignment via optimal transport, distributional preference losses (``aot``, ``aot_unpaired``).

Both compare *sorted* quantities across the batch (the 1-D optimal-transport coupling between two empirical
distributions is the quantile matching), so the ``[B]`` losses they return are per quantile, not per input pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_in_range, require_positive


def _smoothed_logistic(delta: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    # cDPO-style label smoothing, as TRL applies it to both AOT variants.
    return -F.logsigmoid(beta * delta) * (1.0 - label_smoothing) - F.logsigmoid(-beta * delta) * label_smoothing


def _check(batch: PreferenceBatch, name: str, beta: float, label_smoothing: float) -> None:
    require_positive("beta", beta)
    require_in_range("label_smoothing", label_smoothing, 0.0, 0.5)
    if batch.weight is not None:
        # Sorting detaches each loss entry from its input pair, so a per-pair weight has nothing to scale.
        raise ValueError(f"loss_type {name!r} sorts across the batch, so its per-entry losses are per quantile, not "
                         "per pair: a per-example `weight` column cannot apply. Drop the `weight` column or choose "
                         "another loss_type.")


@register_preference_loss("aot")
def aot_loss(
    batch: PreferenceBatch, *, beta: float = 0.1, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """AOT, paired (Melnyk et al., NeurIPS 2024, arXiv 2406.05882): the policy's margin distribution should
    dominate the reference's.

    ``m_i = ℓ_θ(y_w,i) − ℓ_θ(y_l,i)`` and ``m^ref_i = ℓ_ref(y_w,i) − ℓ_ref(y_l,i)`` are sorted separately across the
    batch, ``d_(k) = m_(k) − m^ref_(k)`` (k-th smallest of each), and
    ``L_k = −(1−ε)·log σ(β·d_(k)) − ε·log σ(−β·d_(k))``. Shapes: ``[B]`` out, entry k for quantile k.
    ``beta`` (default 0.1, TRL's) must be > 0; ``label_smoothing`` ε (default 0) in [0, 0.5).

    Paper vs code: the paper states first-order stochastic dominance of the policy's reward margin over the
    reference's, relaxed by a smooth convex loss over the sorted (quantile-matched) samples; the logistic loss
    with cDPO smoothing is TRL 1.16's choice (``loss_type="aot"``), followed here. The sort runs over one
    micro-batch on one device (as in TRL): larger batches give finer quantiles. Per-example ``weight`` is refused
    (the entries are quantiles); TRL likewise refuses WPO weighting with AOT.
    """
    _check(batch, "aot", beta, label_smoothing)
    margins, _ = torch.sort(batch.chosen_logps_sum - batch.rejected_logps_sum, dim=0)
    ref_margins, _ = torch.sort(batch.ref_chosen_logps_sum - batch.ref_rejected_logps_sum, dim=0)
    return _smoothed_logistic(margins - ref_margins, beta, label_smoothing), {}


@register_preference_loss("aot_unpaired")
def aot_unpaired_loss(
    batch: PreferenceBatch, *, beta: float = 0.1, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """AOT, unpaired (Melnyk et al., NeurIPS 2024, arXiv 2406.05882): the chosen-reward distribution should
    dominate the rejected-reward distribution.

    ``r_w = ℓ_θ(y_w) − ℓ_ref(y_w)`` and ``r_l`` are sorted separately across the batch,
    ``d_(k) = r_w,(k) − r_l,(k)``, and ``L_k = −(1−ε)·log σ(β·d_(k)) − ε·log σ(−β·d_(k))``. Shapes: ``[B]`` out,
    entry k for quantile k. ``beta`` (default 0.1) must be > 0; ``label_smoothing`` ε (default 0) in [0, 0.5).

    Paper vs code: as for ``aot`` — the logistic relaxation with cDPO smoothing is TRL 1.16's
    (``loss_type="aot_unpaired"``), followed here; chosen and rejected need not come from the same prompt in the
    paper, while here (as in TRL) they are the two sides of the batch's pairs, sorted independently.
    """
    _check(batch, "aot_unpaired", beta, label_smoothing)
    chosen, _ = torch.sort(batch.chosen_logratios, dim=0)
    rejected, _ = torch.sort(batch.rejected_logratios, dim=0)
    return _smoothed_logistic(chosen - rejected, beta, label_smoothing), {}
