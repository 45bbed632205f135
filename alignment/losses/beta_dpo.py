"""β-DPO: DPO with a batch-level dynamic β and β-guided data filtering (a stateful loss)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import LossState, register_preference_loss, require_in_range, require_positive

BETA_MIN = 1e-3


def _std(values: torch.Tensor) -> torch.Tensor:
    """Unbiased std as `torch.std` (the official code), but 0 instead of NaN for a single value."""
    return values.std() if values.numel() > 1 else values.new_zeros(())


@register_preference_loss("beta_dpo")
def beta_dpo_loss(
    batch: PreferenceBatch,
    *,
    state: LossState,
    beta: float = 0.1,
    alpha: float = 0.6,
    rho: float = 0.2,
    momentum: float = 0.9,
    ema_init: str = "zero",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """β-DPO (Wu et al., NeurIPS 2024, arXiv 2407.08639), following the official code (`junkangwu/beta-DPO`).

    Per pair ``M_i = h_i``, the **unscaled** log-ratio margin (the paper calls it a reward gap; the code does not
    multiply by β). ``M`` is gathered over ranks with ``state.gather``. In training (``state.training``) the running
    statistics are updated *including the current batch*, before they are used:
    ``M0 ← m·M0 + (1−m)·mean(M)``, ``σ0 ← m·σ0 + (1−m)·std(M)`` (unbiased std, as ``torch.std``).
    Then ``p_i ∝ exp(−(M_i − M0)²/(2σ0²))``, ``k = ⌊(1−ρ)·B⌋`` pairs are drawn without replacement with
    ``torch.multinomial`` (``state.generator``), ``β_b = sg[max(β0·(1 + α·(mean_kept(M) − M0)), 1e-3)]`` and
    ``L_i = −log σ(β_b·h_i)·B/k`` for kept pairs, ``0`` for dropped ones, so that ``L.mean()`` is the mean over the
    kept pairs (the official code's masked mean).

    Hyper-parameters: ``beta`` β0 (0.1), ``alpha`` α (0.6, the README's recommendation; the yaml default is 0),
    ``rho`` ρ, the fraction of pairs dropped (0.2, `mode_weight`), ``momentum`` m (0.9), ``ema_init``: ``"zero"``
    (default; the official code starts both EMAs at 0, so after the first batch ``M0 = 0.1·mean``, ``σ0 = 0.1·std``)
    or ``"first_batch"`` (the first training batch's mean and std, no start-up bias). With ``"zero"``, σ0 is biased
    towards 0 for the first ~1/(1−m) steps, so the Gaussian weights of outlying pairs underflow and the filter drops
    the pairs farthest from M0 almost deterministically early in training (as in the official code).

    Deliberate differences from the official code:
    - multi-rank: the statistics are global (gathered) but each rank filters its **local** batch and computes its own
      β_b from its kept pairs; the official code samples over the gathered global batch. With one process they agree.
    - the EMAs are updated only in training; the official code updates them on eval batches too. Filtering (and so
      a draw from ``state.generator``) still happens on eval batches, as in the official code.
    - ``k ≥ 1`` always (``⌊(1−ρ)B⌋`` with a 1e-9 tolerance against float round-off, at least 1); if ``σ0 = 0`` or every
      weight underflows, pairs are drawn uniformly instead of failing.

    Metrics (scalars): ``beta_dpo/beta`` (β_b), ``beta_dpo/kept_fraction`` (k/B), ``beta_dpo/margin_mean_ema`` (M0),
    ``beta_dpo/margin_std_ema`` (σ0).
    """
    require_positive("beta", beta)
    if not alpha >= 0:
        raise ValueError(f"`alpha` must be >= 0, got {alpha}.")
    require_in_range("rho", rho, 0.0, 1.0)
    require_in_range("momentum", momentum, 0.0, 1.0)
    if ema_init not in ("zero", "first_batch"):
        raise ValueError(f"`ema_init` must be 'zero' (official code) or 'first_batch', got {ema_init!r}.")

    h = batch.logratio_margin
    local = h.detach().float()
    device = local.device
    buffers = state.scalar_buffers(("margin_mean", "margin_std", "num_updates"), device)

    if state.training:
        with torch.no_grad():
            gathered = state.gather(local)
            batch_mean, batch_std = gathered.mean(), _std(gathered)
            if ema_init == "first_batch" and buffers["num_updates"].item() == 0:
                buffers["margin_mean"].copy_(batch_mean)
                buffers["margin_std"].copy_(batch_std)
            else:
                buffers["margin_mean"].mul_(momentum).add_((1 - momentum) * batch_mean)
                buffers["margin_std"].mul_(momentum).add_((1 - momentum) * batch_std)
            buffers["num_updates"].add_(1)
    mean0, std0 = buffers["margin_mean"], buffers["margin_std"]

    batch_size = h.numel()
    kept = min(batch_size, max(1, math.floor((1 - rho) * batch_size + 1e-9)))
    with torch.no_grad():
        weights = torch.exp(-0.5 * ((local - mean0) / std0).pow(2)) if std0 > 0 else torch.ones_like(local)
        if not torch.isfinite(weights).all() or weights.sum() <= 0:
            weights = torch.ones_like(local)
        generator = state.generator
        sample_device = generator.device if generator is not None else device
        index = torch.multinomial(weights.to(sample_device), kept, replacement=False, generator=generator).to(device)
        keep = torch.zeros_like(local)
        keep[index] = 1.0
        beta_used = (beta * (1 + alpha * (local[index].mean() - mean0))).clamp(min=BETA_MIN)

    losses = -F.logsigmoid(beta_used.to(h.dtype) * h) * keep.to(h.dtype) * (batch_size / kept)
    metrics = {
        "beta_dpo/beta": beta_used,
        "beta_dpo/kept_fraction": torch.tensor(kept / batch_size, device=device),
        "beta_dpo/margin_mean_ema": mean0.clone(),
        "beta_dpo/margin_std_ema": std0.clone(),
    }
    return losses, metrics
