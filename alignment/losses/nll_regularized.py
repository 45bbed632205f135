"""DPO plus an NLL term on the chosen response: IRPO (length-normalised) and RPO (sequence-level, scaled by β)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import register_preference_loss, require_positive


def _require_nonnegative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"`{name}` must be >= 0, got {value}.")


@register_preference_loss("irpo")
def irpo_loss(
    batch: PreferenceBatch, *, beta: float = 0.1, alpha: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IRPO loss (Pang et al., NeurIPS 2024, arXiv 2404.19733): DPO + length-normalised NLL of the winner.

    ``L = −log σ(βh) − α · ℓ_θ(y_w) / |y_w|``; shape ``[B]``. ``alpha`` α defaults to 1 (the paper's value; also
    TRL's ``loss_type=["sigmoid","sft"], loss_weights=[1, 1]``). Per example this equals this toolkit's
    ``loss_type: [sigmoid, sft]`` with ``loss_weights: [1, α]``. It differs from TRL's ``"sft"`` term, which averages
    over all chosen tokens of the batch at once (equal when chosen lengths are equal). The iterative outer loop of
    the paper (re-sampling CoTs each round) is not part of the loss. ``|y_w|`` is the chosen-completion length;
    ``ℓ_θ`` applies per-token weights if the batch has them (as ``sft`` does).

    Metrics: ``irpo/nll`` (``−ℓ_θ(y_w)/|y_w|``) per example.
    """
    require_positive("beta", beta)
    _require_nonnegative("alpha", alpha)
    nll = -batch.chosen_logps_sum / batch.chosen_lengths.clamp(min=1)
    return -F.logsigmoid(beta * batch.logratio_margin) + alpha * nll, {"irpo/nll": nll.detach()}


@register_preference_loss("rpo")
def rpo_loss(
    batch: PreferenceBatch, *, beta: float = 0.1, eta: float = 0.005
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RPO (Liu et al., NeurIPS 2024, arXiv 2405.16436): DPO + η·β × sequence NLL of the chosen response.

    ``L = −log σ(βh) − η·β · ℓ_θ(y_w)`` with ``ℓ_θ(y_w)`` the **summed** (sequence-level) log-likelihood, the baseline
    distribution being the chosen responses; shape ``[B]`` (the trainer averages over the batch, as the official code
    does with ``losses.mean()``). ``eta`` η defaults to 0.005 (paper App. E.1 and the official zephyr recipes,
    together with ``beta=0.01``; ``beta`` defaults to 0.1 here like every loss — set 0.01 in the recipe).

    Paper vs code: we follow the official code (YSLIU627/Regularized-Preference-Optimization,
    ``alignment-handbook/scripts/rpo_trainer.py``: ``losses -= policy_chosen_logps * self.beta * self.eta`` with
    ``policy_chosen_logps`` the token **sum** from ``get_batch_logps``), where the NLL term carries β. Without the β
    the term is 1/β too strong (100x at β=0.01). The authors' OpenRLHF variant instead adds a token-mean NLL with
    its own coefficient (``--nll_loss_coef 0.2``, no β); that is ``irpo`` with ``alpha: 0.2`` here.

    Convention: TRL's recipe ``loss_type=["sigmoid","sft"], loss_weights=[1.0, 0.005]`` uses a token-**mean** NLL
    without β, so it matches this loss only for chosen responses of about 1/β = 100 tokens (0.005/|y_w| vs η·β per
    token). To get TRL's scale use ``irpo`` with ``alpha: 0.005`` (per-example length-normalised). Not to be confused
    with TRL's old ``rpo_alpha``, which implements IRPO's length-normalised term.

    Metrics: ``rpo/nll`` (``−ℓ_θ(y_w)``, unscaled) per example.
    """
    require_positive("beta", beta)
    _require_nonnegative("eta", eta)
    nll = -batch.chosen_logps_sum
    return -F.logsigmoid(beta * batch.logratio_margin) + eta * beta * nll, {"rpo/nll": nll.detach()}
