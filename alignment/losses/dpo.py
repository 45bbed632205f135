"""DPO: the sigmoid (Bradley-Terry) preference loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


@register_preference_loss("sigmoid")
def sigmoid_loss(batch: PreferenceBatch, *, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (Rafailov et al., NeurIPS 2023, arXiv 2305.18290).

    ``L = −log σ(β · h)`` with ``h = [ℓ_θ(y_w) − ℓ_ref(y_w)] − [ℓ_θ(y_l) − ℓ_ref(y_l)]`` and ``ℓ`` the summed
    completion log-prob. Shapes: batch of ``B`` pairs in, ``[B]`` out. ``beta`` (default 0.1) is the KL-penalty
    strength; it must be positive. Equal to TRL's ``loss_type="sigmoid"`` with ``f_divergence_type="reverse_kl"``.
    """
    require_positive("beta", beta)
    return -F.logsigmoid(beta * batch.logratio_margin), {}


@register_preference_loss("sft", reference_free=True)
def sft_loss(batch: PreferenceBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative log-likelihood of the chosen completion, length-normalised per example.

    ``L = −ℓ_θ(y_w) / |y_w|``; shape ``[B]``. It takes no hyper-parameters: its strength is its entry in
    `loss_weights`. Combined as ``loss_type: [sigmoid, sft]`` with ``loss_weights: [1.0, α]`` it gives the IRPO
    objective (Pang et al., NeurIPS 2024, arXiv 2404.19733): ``−log σ(βh) − α ℓ_θ(y_w)/|y_w|``.

    Note: TRL's ``"sft"`` term averages over all chosen tokens of the batch at once; this one averages within each
    example, then over examples. The two are equal when every chosen completion in the batch has the same length.
    """
    return -batch.chosen_logps_sum / batch.chosen_lengths.clamp(min=1), {
        "nll/chosen": -batch.chosen_logps_sum.detach() / batch.chosen_lengths.clamp(min=1)
    }


@register_preference_loss("sigmoid_norm")
def sigmoid_norm_loss(batch: PreferenceBatch, *, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Length-normalised DPO: the sigmoid loss on per-token log-ratios (as in Tülu 3, Lambert et al., arXiv 2411.15124).

    ``L = −log σ(β · h_norm)`` with ``h_norm = [ℓ_θ(y_w) − ℓ_ref(y_w)] / |y_w| − [ℓ_θ(y_l) − ℓ_ref(y_l)] / |y_l|``,
    each side divided by its own completion length (mask-1 tokens, clamped at 1). Shapes: ``[B]`` out. ``beta``
    (default 0.1, TRL's) must be > 0; per-token log-ratios are ~|y| times smaller than sums, so useful β are larger
    (Tülu 3 used β = 5).

    Paper vs code: DPO (arXiv 2305.18290) uses sequence sums; dividing by length removes DPO's bias towards longer
    chosen answers. Equal to TRL 1.16 ``loss_type="sigmoid_norm"`` with ``f_divergence_type="reverse_kl"`` (the
    length is the number of completion tokens, also under token weighting, as in `ipo`).

    Metric ``sigmoid_norm/normalized_margin``: ``h_norm`` per example.
    """
    require_positive("beta", beta)
    h_norm = (batch.chosen_logratios / batch.chosen_lengths.clamp(min=1)
              - batch.rejected_logratios / batch.rejected_lengths.clamp(min=1))
    return -F.logsigmoid(beta * h_norm), {"sigmoid_norm/normalized_margin": h_norm.detach()}
