"""NGRPO: GRPO advantages calibrated with virtual maximum-reward samples."""

from __future__ import annotations

import torch

from ..registry import require_bool, require_positive
from .registry import register_advantage_estimator


# Scale-invariant only with k = 0 (GRPO with this eps): the k virtual samples keep reward r_max, which a factor on
# the real rewards does not scale, so the calibration point moves relative to them.
@register_advantage_estimator("ngrpo", scale_invariant=lambda hparams: hparams["k"] == 0)
def ngrpo_advantages(
    rewards: torch.Tensor, *, k: int = 1, r_max: float = 1.0, eps: float = 1e-6, unbiased: bool = True
) -> torch.Tensor:
    """NGRPO (Nan et al., arXiv 2509.18851): add ``k`` virtual samples with reward ``r_max`` to every group.

    ``μ' = mean(r_1..r_G, r_max × k)``, ``σ' = std(r_1..r_G, r_max × k)`` and ``A_i = (r_i − μ') / (σ' + eps)``
    for the ``G`` real completions only. Shapes: ``[num_groups, G]`` in and out.

    The virtual sample makes every real completion of an all-wrong group negative (binary rewards, G=8:
    ``−1/3`` each), where GRPO gives 0 and so learns nothing from such prompts; an all-correct group equal to
    ``r_max`` still gets 0. Defaults follow the official code (``compute_ngrpo_outcome_advantage``, repo
    nangongrui-ngr/NGRPO): ``k=1``, ``r_max=1.0`` (the task's maximum reward), ``eps=1e-6``, and the Bessel-corrected
    std over the ``G + k`` values (``unbiased=True``; ``False`` divides by ``G + k``). ``k=0`` is GRPO with
    this ``eps``. As in that code, a single-completion group (``G=1``) gets ``μ'=0``, ``σ'=1``, i.e. ``A = r / (1 + eps)``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"`k` (number of virtual r_max samples) must be an int >= 0, got {k!r}.")
    require_positive("eps", eps)
    require_bool("unbiased", unbiased)
    if rewards.shape[1] == 1:
        return rewards / (1.0 + eps)
    virtual = torch.full((rewards.shape[0], k), float(r_max), dtype=rewards.dtype, device=rewards.device)
    augmented = torch.cat([rewards, virtual], dim=1)
    mean = augmented.mean(dim=1, keepdim=True)
    std = augmented.std(dim=1, keepdim=True, unbiased=unbiased)
    return (rewards - mean) / (std + eps)
