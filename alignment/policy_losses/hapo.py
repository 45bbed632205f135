"""HAPO's entropy-driven clipping and advantage redistribution as a policy loss (``policy_loss: hapo``).

Pure tensor functions; the registered `hapo` loss runs them before the PPO clipped surrogate (`clipped.py`). Shapes:
``[B, T]`` per-token tensors (B completions, T completion positions); advantages may be ``[B, 1]`` (one per
completion, broadcast over tokens).

HAPO (Liu et al., "Heterogeneous Adaptive Policy Optimization", arXiv 2509.16591; official code
`starriver030515/HAPO`, `verl/trainer/ppo/core_algos.py`): a per-batch normalised token entropy h_hat in [-1, 1]
drives (iii) advantage redistribution and (iv) asymmetric adaptive clipping. Which h_hat we follow: the released code
computes the negative side as ``h * (1 / min(h))`` with ``min(h) < 0``, which makes every h_hat >= 0 (methods sheet,
cross-check 9), so the low-entropy branches never fire. We follow the paper's stated intent (signed h_hat: low-entropy
tokens get h_hat < 0) by default; ``compat_code=True`` reproduces the released code.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..registry import require_bool, require_in_range
from .clipped import clip_metrics, clipped_surrogate
from .registry import POLICY_LOSSES

ENTROPY_FLOOR = 1e-8  # HAPO: log(max(H, 1e-8))
STD_EPS = 1e-6  # HAPO code: (e - q) / (std + 1e-6)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


class EntropyStatistics(NamedTuple):
    """The per-batch normalisation of HAPO's h_hat (scalar tensors): the pivot quantile ``q`` of the log-entropies,
    their spread ``std`` around it, and the scales of the positive and negative sides (the official code's
    ``norm_entropys = (median, std, scale_pos, scale_neg)``, which its sampler reuses one step later)."""

    q: torch.Tensor
    std: torch.Tensor
    pos_scale: torch.Tensor
    neg_scale: torch.Tensor


def entropy_statistics(entropy: torch.Tensor, mask: torch.Tensor, pivot: float = 0.8,
                       compat_code: bool = False) -> EntropyStatistics | None:
    """The statistics of `normalized_entropy` over the masked tokens of ``entropy`` ``[B, T]``; None when the mask
    is empty. ``pos_scale = 1 / max(h)`` (0 when no h > 0); ``neg_scale = 1 / |min(h)|`` (``1 / min(h)`` with
    ``compat_code``; 0 when no h < 0)."""
    mask = mask.to(entropy.dtype)
    if mask.sum() == 0:
        return None
    e = torch.log(entropy.clamp(min=ENTROPY_FLOOR))
    q = torch.quantile(e[mask.bool()].float(), pivot).to(e.dtype)
    d = e - q
    std = torch.sqrt(_masked_mean(d * d, mask))
    h = d / (std + STD_EPS)
    valid = mask.bool()
    h_max = h[valid].max()
    h_min = h[valid].min()
    pos_scale = 1.0 / h_max if h_max > 0 else torch.zeros_like(h_max)
    if h_min < 0:
        neg_scale = (1.0 / h_min) if compat_code else (1.0 / h_min.abs())
    else:
        neg_scale = torch.zeros_like(h_min)
    return EntropyStatistics(q, std, pos_scale, neg_scale)


def apply_entropy_statistics(entropy: torch.Tensor, stats: EntropyStatistics) -> torch.Tensor:
    """h_hat (same shape as ``entropy``) of entropies normalised with given statistics, clipped to [-1, 1]:
    ``h = (log max(H, 1e-8) - q) / (std + 1e-6)``, ``h_hat = clip(h * (pos_scale if h > 0 else neg_scale), -1, 1)``.
    The clip matters when the statistics come from another batch (the sampler's case): a token may lie beyond that
    batch's max or min."""
    h = (torch.log(entropy.clamp(min=ENTROPY_FLOOR)) - stats.q) / (stats.std + STD_EPS)
    return torch.where(h > 0, h * stats.pos_scale, h * stats.neg_scale).clamp(-1.0, 1.0)


def normalized_entropy(entropy: torch.Tensor, mask: torch.Tensor, pivot: float = 0.8,
                       compat_code: bool = False) -> torch.Tensor:
    """HAPO's normalised token entropy h_hat ``[B, T]`` (0 at masked positions).

    ``e_t = log max(H_t, 1e-8)``; ``q`` = the `pivot` quantile of e over the masked tokens (HAPO default 0.8, not the
    median); ``h_t = (e_t - q) / (sqrt(mean_masked((e - q)^2)) + 1e-6)``; then ``h_hat = h / max(h)`` for h > 0 and
    ``h / |min(h)|`` for h <= 0, so h_hat lies in [-1, 1] (low-entropy tokens negative). With ``compat_code=True``
    the negative side is divided by ``min(h)`` itself, as in the released code: h_hat >= 0 everywhere. The same
    statistics (`entropy_statistics`) normalise the next rollout's sampling temperature (`alignment.sampling`).
    """
    stats = entropy_statistics(entropy, mask, pivot, compat_code)
    if stats is None:
        return torch.zeros_like(entropy)
    return apply_entropy_statistics(entropy, stats) * mask.to(entropy.dtype)


def adaptive_clip_bounds(eps_low: float, eps_high: float, h_hat: torch.Tensor,
                         alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """HAPO (iv) asymmetric adaptive clipping: per-token ``(eps_low', eps_high')``, each ``[B, T]``.

    Low-entropy tokens (h_hat <= 0): ``eps_low' = eps_low (1 - alpha h_hat)`` (a wider lower bound, so noisy
    low-entropy tokens can be pushed down further); high-entropy tokens (h_hat > 0): ``eps_high' = eps_high (1 + alpha
    h_hat)`` (a wider upper bound for exploratory tokens). The other bound of each token is unchanged.
    """
    low = torch.full_like(h_hat, float(eps_low))
    high = torch.full_like(h_hat, float(eps_high))
    low = torch.where(h_hat <= 0, low * (1 - alpha * h_hat), low)
    high = torch.where(h_hat > 0, high * (1 + alpha * h_hat), high)
    return low, high


def redistribute_advantages(advantages: torch.Tensor, h_hat: torch.Tensor, ratio: torch.Tensor,
                            eps_low: float | torch.Tensor, eps_high: float | torch.Tensor,
                            beta: float = 1.0) -> torch.Tensor:
    """HAPO (iii) differential advantage redistribution, ``[B, T]``.

    ``A' = A (1 + beta h_hat)``; neutral band ``N = (1 - eps_low/2, 1 + eps_high/2)`` on the (detached) ratio.
    High-entropy tokens (h_hat > 0) use A' when the ratio is outside N, else A; the other tokens use A' inside N,
    else A.
    """
    scaled = advantages * (1 + beta * h_hat)
    in_band = (ratio > 1 - eps_low / 2) & (ratio < 1 + eps_high / 2)
    high_entropy = torch.where(in_band, advantages, scaled)
    other = torch.where(in_band, scaled, advantages)
    return torch.where(h_hat > 0, high_entropy, other)


@POLICY_LOSSES.register("hapo")
def hapo(*, ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, entropies: torch.Tensor,
         epsilon_low: float, epsilon_high: float, adaptive_clip: bool = True, advantage_redistribution: bool = True,
         entropy_pivot: float = 0.8, clip_alpha: float = 1.0, adv_beta: float = 1.0, compat_code: bool = False,
         by_advantage_sign: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """HAPO's adaptive clipping and advantage redistribution from the normalised token entropy, then PPO's clip.

    ``adaptive_clip``: (iv) per-token bounds `adaptive_clip_bounds` of strength ``clip_alpha`` around TRL's
    `epsilon` / `epsilon_high`; ``advantage_redistribution``: (iii) `redistribute_advantages` of strength
    ``adv_beta``, its neutral band taken from the (adapted) bounds; at least one must be on (otherwise this is
    `clipped`). ``entropy_pivot``: quantile of the log-entropies that maps to h_hat = 0, in (0, 1).
    ``compat_code``: reproduce the released code's h_hat (every h_hat >= 0, see the module docstring).
    ``by_advantage_sign``: the surrogate's sign-dependent trust region (`sign_clipped`), same loss under the min.
    Metrics: TRL's clip ratios, ``hapo/h_hat_mean`` and the mean per-token bounds ``hapo/eps_{low,high}_mean``.
    """
    for key, value in (("adaptive_clip", adaptive_clip), ("advantage_redistribution", advantage_redistribution),
                       ("compat_code", compat_code), ("by_advantage_sign", by_advantage_sign)):
        require_bool(key, value)
    if isinstance(entropy_pivot, bool) or not isinstance(entropy_pivot, (int, float)) or not 0.0 < entropy_pivot < 1.0:
        raise ValueError(f"`entropy_pivot` must be in (0, 1), got {entropy_pivot!r}.")
    require_in_range("clip_alpha", clip_alpha, 0.0, math.inf)
    require_in_range("adv_beta", adv_beta, 0.0, math.inf)
    if not (adaptive_clip or advantage_redistribution):
        raise ValueError("policy_loss 'hapo' with no HAPO switch on (`adaptive_clip`, `advantage_redistribution`) "
                         "is the clipped surrogate: turn one on, or use `policy_loss: clipped`.")
    eps_low, eps_high = epsilon_low, epsilon_high
    h_hat = normalized_entropy(entropies.detach(), mask, entropy_pivot, compat_code)
    if adaptive_clip:
        eps_low, eps_high = adaptive_clip_bounds(eps_low, eps_high, h_hat, clip_alpha)
    if advantage_redistribution:
        advantages = redistribute_advantages(advantages, h_hat, ratio.detach(), eps_low, eps_high, adv_beta)
    per_token_loss = clipped_surrogate(ratio, advantages, eps_low, eps_high, by_advantage_sign)
    low = torch.as_tensor(eps_low, device=ratio.device)
    high = torch.as_tensor(eps_high, device=ratio.device)
    if by_advantage_sign:
        low = torch.where(advantages > 0, high, low)
    metrics = clip_metrics(ratio, advantages, low, high)
    metrics.update({"hapo/h_hat_mean": h_hat, "hapo/eps_low_mean": low.expand_as(ratio),
                    "hapo/eps_high_mean": high.expand_as(ratio)})
    return per_token_loss, metrics
