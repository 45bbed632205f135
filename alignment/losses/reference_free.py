"""Reference-free preference losses: SimPO, CPO and ORPO. They read only the policy's log-probs, so the trainer
neither loads nor runs a reference model when every selected loss is one of these (`reference_free=True`).

Numeric anchor: TRL 1.16's experimental trainers, `trl/experimental/cpo/cpo_trainer.py` (`CPOTrainer.cpo_loss`,
``loss_type`` ``"sigmoid"`` and ``"simpo"``) and `trl/experimental/orpo/orpo_trainer.py`
(`ORPOTrainer.odds_ratio_loss`).
The preference terms agree with them exactly on the same sequence log-probs (tests/test_losses_reference_free.py).
The NLL terms are per-example token means here, whereas TRL averages over all chosen tokens of the batch at once
(equal when the chosen completions of a batch have the same length); see each loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_in_range, require_positive


def _require_nonnegative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"`{name}` must be >= 0, got {value}.")


def _mean_logps(batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Length-normalised log-likelihoods ``ℓ(y)/|y|`` of chosen and rejected, ``[B]`` each."""
    return (batch.chosen_logps_sum / batch.chosen_lengths.clamp(min=1),
            batch.rejected_logps_sum / batch.rejected_lengths.clamp(min=1))


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 − exp(x))`` for ``x < 0``; branch at −ln 2 to avoid cancellation (Mächler 2012; as TRL's ORPO)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


@register_preference_loss("simpo", reference_free=True)
def simpo_loss(
    batch: PreferenceBatch, *, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO (Meng, Xia & Chen, NeurIPS 2024, arXiv 2405.14734): length-normalised reward with a target margin.

    ``L = −log σ(β ℓ_θ(y_w)/|y_w| − β ℓ_θ(y_l)/|y_l| − γ)`` (paper Eq. 6); with ``label_smoothing`` ε the conservative
    form ``−(1−ε) log σ(z) − ε log σ(−z)``. Shape ``[B]``. ``beta`` β (default 2.0, as in the official base-model configs) scales
    the length-normalised log-likelihood; ``gamma`` γ (default 0.5) is the absolute target reward margin.

    Paper vs code: the official code (princeton-nlp/SimPO) is configured with ``gamma_beta_ratio`` = γ/β and computes
    ``β[(ℓ̄_w − ℓ̄_l) − γ/β]``; TRL's ``CPOConfig(loss_type="simpo", simpo_gamma=γ)`` takes the absolute γ and does the
    same. Here ``gamma`` is the absolute γ (TRL's convention): ``gamma = beta × gamma_beta_ratio``. TRL's CPO trainer
    also adds ``cpo_alpha``·NLL (default 1.0, i.e. "CPO-SimPO"); pure SimPO has none (the official code defaults
    to ``sft_weight=0``). For CPO-SimPO use ``loss_type: [simpo, sft]`` with ``loss_weights: [1, α]``.

    Metrics: ``simpo/reward_margin`` (``β(ℓ̄_w − ℓ̄_l)``, before γ) per example.
    """
    require_positive("beta", beta)
    require_in_range("label_smoothing", label_smoothing, 0.0, 0.5, high_inclusive=True)
    chosen, rejected = _mean_logps(batch)
    logits = beta * (chosen - rejected) - gamma
    losses = -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing
    return losses, {"simpo/reward_margin": (beta * (chosen - rejected)).detach()}


@register_preference_loss("cpo", reference_free=True)
def cpo_loss(
    batch: PreferenceBatch, *, beta: float = 0.1, alpha: float = 1.0, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CPO (Xu et al., ICML 2024, arXiv 2401.08417): DPO with a uniform reference, plus NLL on the chosen response.

    ``L = −log σ(β[ℓ_θ(y_w) − ℓ_θ(y_l)]) − α ℓ_θ(y_w)/|y_w|`` with ``ℓ`` the summed completion log-prob (paper Eq. 3
    and the NLL regulariser of Eq. 4); ``label_smoothing`` ε gives the conservative form as in TRL. Shape ``[B]``.
    ``beta`` β defaults to 0.1 and ``alpha`` α to 1.0 (TRL's ``CPOConfig`` defaults ``beta``, ``cpo_alpha``).

    Paper vs code: the paper writes the NLL as ``−E log π_θ(y_w|x)``; TRL (``concatenated_forward``) takes the
    token-mean cross-entropy over all chosen tokens of the batch. Here it is the token mean within each example, then
    the batch mean (equal to TRL's when chosen lengths are equal). With ``alpha=0`` this is TRL's CPO ``sigmoid``
    loss with ``cpo_alpha=0``.

    Metrics: ``cpo/nll`` (``−ℓ_θ(y_w)/|y_w|``) per example.
    """
    require_positive("beta", beta)
    _require_nonnegative("alpha", alpha)
    require_in_range("label_smoothing", label_smoothing, 0.0, 0.5, high_inclusive=True)
    logits = beta * (batch.chosen_logps_sum - batch.rejected_logps_sum)
    preference = -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing
    nll = -batch.chosen_logps_sum / batch.chosen_lengths.clamp(min=1)
    return preference + alpha * nll, {"cpo/nll": nll.detach()}


@register_preference_loss("orpo", reference_free=True)
def orpo_loss(batch: PreferenceBatch, *, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ORPO (Hong, Lee & Thorne, EMNLP 2024, arXiv 2403.07691): NLL plus an odds-ratio preference term.

    ``L = −ℓ̄_θ(y_w) − λ log σ(log odds(y_w) − log odds(y_l))`` with ``ℓ̄ = ℓ/|y|`` the length-normalised
    log-likelihood and ``log odds(y) = ℓ̄ − log(1 − exp ℓ̄)`` (paper Eqs. 4-7). Shape ``[B]``. ``beta`` is the paper's
    λ (default 0.1, TRL's ``ORPOConfig.beta``).

    Paper vs code: TRL (`ORPOTrainer.odds_ratio_loss`) computes the odds-ratio term exactly so, in float32; its NLL
    is the token-mean cross-entropy over the **prompt and** the chosen response, pooled over the batch. Here the NLL
    is over the chosen response only, as the paper's ``L_SFT`` (Eq. 2), averaged per example.

    Metrics: ``orpo/nll`` per example, ``orpo/log_odds_ratio`` (``log σ(·)``) and ``orpo/log_odds`` (its argument),
    TRL's ``log_odds_ratio`` / ``log_odds_chosen``.
    """
    require_positive("beta", beta)
    chosen, rejected = _mean_logps(batch)
    dtype = torch.promote_types(chosen.dtype, torch.float32)  # log1mexp near 0 needs ≥ fp32, as in TRL
    chosen, rejected = chosen.to(dtype), rejected.to(dtype)
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    ratio = F.logsigmoid(log_odds)
    nll = -chosen
    return nll - beta * ratio, {"orpo/nll": nll.detach(), "orpo/log_odds_ratio": ratio.detach(),
                                "orpo/log_odds": log_odds.detach()}
