"""Per-token clipped policy surrogates for group-relative RL: sign-dependent bounds and HAPO's entropy switches.

Pure tensor functions, used by `GroupRLTrainer` when a recipe turns on `clip_by_advantage_sign` or a HAPO switch
(otherwise TRL's own surrogate runs). Shapes: ``[B, T]`` per-token tensors (B completions, T completion positions);
advantages may be ``[B, 1]`` (one per completion, broadcast over tokens).

PPO clipped surrogate (the loss minimised, per token)::

    loss_t = -min(rho_t * A, clip(rho_t, 1 - eps_low, 1 + eps_high) * A)

Because of the min, only the upper bound can bind when A > 0 and only the lower bound when A < 0.

HAPO (Liu et al., "Heterogeneous Adaptive Policy Optimization", arXiv 2509.16591; official code
`starriver030515/HAPO`, `verl/trainer/ppo/core_algos.py`): a per-batch normalised token entropy h_hat in [-1, 1]
drives (iii) advantage redistribution and (iv) asymmetric adaptive clipping. Which h_hat we follow: the released code
computes the negative side as ``h * (1 / min(h))`` with ``min(h) < 0``, which makes every h_hat >= 0 (methods sheet,
cross-check 9), so the low-entropy branches never fire. We follow the paper's stated intent (signed h_hat: low-entropy
tokens get h_hat < 0) by default; ``compat_code=True`` reproduces the released code.
"""

from __future__ import annotations

import torch

ENTROPY_FLOOR = 1e-8  # HAPO: log(max(H, 1e-8))
STD_EPS = 1e-6  # HAPO code: (e - q) / (std + 1e-6)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def normalized_entropy(entropy: torch.Tensor, mask: torch.Tensor, pivot: float = 0.8,
                       compat_code: bool = False) -> torch.Tensor:
    """HAPO's normalised token entropy h_hat ``[B, T]`` (0 at masked positions).

    ``e_t = log max(H_t, 1e-8)``; ``q`` = the `pivot` quantile of e over the masked tokens (HAPO default 0.8, not the
    median); ``h_t = (e_t - q) / (sqrt(mean_masked((e - q)^2)) + 1e-6)``; then ``h_hat = h / max(h)`` for h > 0 and
    ``h / |min(h)|`` for h <= 0, so h_hat lies in [-1, 1] (low-entropy tokens negative). With ``compat_code=True``
    the negative side is divided by ``min(h)`` itself, as in the released code: h_hat >= 0 everywhere.
    """
    mask = mask.to(entropy.dtype)
    if mask.sum() == 0:
        return torch.zeros_like(entropy)
    e = torch.log(entropy.clamp(min=ENTROPY_FLOOR))
    q = torch.quantile(e[mask.bool()].float(), pivot).to(e.dtype)
    d = e - q
    h = d / (torch.sqrt(_masked_mean(d * d, mask)) + STD_EPS)
    valid = mask.bool()
    h_max = h[valid].max()
    h_min = h[valid].min()
    pos_scale = 1.0 / h_max if h_max > 0 else torch.zeros_like(h_max)
    if h_min < 0:
        neg_scale = (1.0 / h_min) if compat_code else (1.0 / h_min.abs())
    else:
        neg_scale = torch.zeros_like(h_min)
    h_hat = torch.where(h > 0, h * pos_scale, h * neg_scale).clamp(-1.0, 1.0)
    return h_hat * mask


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


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float | torch.Tensor,
                      eps_high: float | torch.Tensor, by_advantage_sign: bool = False) -> torch.Tensor:
    """Per-token clipped surrogate loss ``-min(rho A, clip(rho, lo, hi) A)``, ``[B, T]``.

    Default: ``lo = 1 - eps_low``, ``hi = 1 + eps_high`` for every token (TRL's `epsilon`/`epsilon_high`; the NGRPO
    code's 0.16/0.24 and DAPO's clip-higher 0.2/0.28 are of this form). ``by_advantage_sign=True`` is the NGRPO paper's
    wording taken literally: a positive-advantage token gets the loose trust region ``1 +- eps_high``, a
    negative-advantage token the strict one ``1 +- eps_low``. Under the pessimistic min the two give the same loss
    (only hi binds for A > 0, only lo for A < 0), which `tests/test_group_rl_trainer.py` checks; the option exists
    to make that reading explicit in a recipe.
    """
    if by_advantage_sign:
        width = torch.where(advantages > 0, torch.as_tensor(eps_high), torch.as_tensor(eps_low))
        lo, hi = 1 - width, 1 + width
    else:
        lo, hi = 1 - torch.as_tensor(eps_low), 1 + torch.as_tensor(eps_high)
    lo = lo.to(ratio.dtype).to(ratio.device)
    hi = hi.to(ratio.dtype).to(ratio.device)
    clipped = torch.minimum(torch.maximum(ratio, lo), hi)
    return -torch.minimum(ratio * advantages, clipped * advantages)
