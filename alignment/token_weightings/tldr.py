"""TLDR token weighting: hard (low-probability) completion tokens weigh more."""

from __future__ import annotations

import math

import torch

from .registry import register_token_weighting


@register_token_weighting("tldr")
def tldr_weights(logps: torch.Tensor, mask: torch.Tensor, *, entropy: torch.Tensor | None = None,
                 detach: bool = True) -> torch.Tensor:
    """TLDR token loss dynamic reweighting (Jiang, Wolf, Monz, de Rijke, arXiv 2003.11963): hard tokens weigh more.

    ``w_t = 1 + cos(π · p_t)`` with ``p_t = exp(logp_t)`` the policy probability of the gold (completion) token, so
    ``w ∈ [0, 2]``: 2 at ``p = 0`` (hard token), 1 at ``p = 0.5``, 0 at ``p = 1`` (easy token).

    Shapes: ``logps``, ``mask`` ``[B, T]`` -> weights ``[B, T]`` (zero outside the completion). ``entropy`` is unused.

    ``detach`` (default True) stops the gradient through ``w``. The official code (ParlAI fork ``ShaojieJiang/tldr``)
    does *not* detach ("differentiable weights"): there ``w`` multiplies the NLL ``−log p_t``, which is always
    positive, so the gradient through ``w`` has a fixed meaning. Here ``w`` multiplies a token's contribution to a
    policy/reference *log-ratio* whose sign and role (chosen vs rejected, pushed up or down by the loss) vary, so a
    gradient through ``w`` would move ``p_t`` in a direction unrelated to the preference (e.g. it can raise the
    probability of a rejected token just to shrink its weight). ``detach=False`` follows the paper.
    """
    if not isinstance(detach, bool):
        raise ValueError(f"`detach` must be a bool, got {detach!r}.")
    source = logps.detach() if detach else logps
    probs = source.float().exp()
    return (1.0 + torch.cos(math.pi * probs)).to(logps.dtype) * mask.to(logps.dtype)
