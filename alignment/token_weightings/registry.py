"""Registry of token-weighting functions: per-token weights that compose with every sequence-level loss.

A token weighting maps the policy's per-token log-probs of one side of a pair (chosen or rejected) to a ``[B, T]``
weight per completion token::

    @register_token_weighting("name", requires=("entropy",))
    def my_weighting(logps: Tensor, mask: Tensor, *, entropy: Tensor | None = None, alpha: float = 1.0) -> Tensor:
        ...  # [B, T] weights, zero outside the completion

Every keyword-only parameter with a default other than ``entropy`` is a hyper-parameter, settable from a recipe
(``token_weighting_kwargs``). The weights are not a loss of their own: the trainer puts them into
`PreferenceBatch.chosen_token_weight` / ``rejected_token_weight``, whose sequence sums
``ℓ(y|x) = Σ_t w_t log π(y_t | x, y_<t)`` (policy *and* reference, with the same ``w``) feed whichever loss is
selected. So one weighting composes with every registered loss, and all-ones weights reproduce the unweighted loss
exactly.

``requires`` names per-token model outputs the weighting cannot work without; only ``entropy`` (the policy's
per-token entropy ``H_t = −Σ_v π(v) log π(v)``, the fused LM head's ``outputs.entropy``) exists so far.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..registry_utils import describe_hparams, lookup, reject_unknown

TokenWeightFn = Callable[..., torch.Tensor]

_TOKEN_OUTPUTS = ("entropy",)  # per-token model outputs a weighting may require


@dataclass(frozen=True)
class TokenWeightingSpec:
    """What the registry knows about one token weighting. Calling it computes the weights (with checks)."""

    name: str
    fn: TokenWeightFn
    hparams: dict[str, Any] = field(default_factory=dict)  # name -> default
    requires: tuple[str, ...] = ()  # per-token model outputs, among `_TOKEN_OUTPUTS`

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""

    def __call__(self, logps: torch.Tensor, mask: torch.Tensor, *, entropy: torch.Tensor | None = None,
                 **hparams: Any) -> torch.Tensor:
        return compute_token_weights(self.name, logps, mask, entropy=entropy, **hparams)


_TOKEN_WEIGHTINGS: dict[str, TokenWeightingSpec] = {}


def register_token_weighting(name: str, *, requires: tuple[str, ...] = ()) -> Callable[[TokenWeightFn], TokenWeightFn]:
    """Register ``fn`` under ``name``. Hyper-parameters are its keyword-only arguments with defaults (not `entropy`)."""
    unknown = set(requires) - set(_TOKEN_OUTPUTS)
    if unknown:
        raise ValueError(
            f"register_token_weighting({name!r}): unknown outputs {sorted(unknown)}; valid: {_TOKEN_OUTPUTS}"
        )

    def decorator(fn: TokenWeightFn) -> TokenWeightFn:
        if name in _TOKEN_WEIGHTINGS:
            raise ValueError(f"A token weighting named {name!r} is already registered.")
        params = inspect.signature(fn).parameters
        if "entropy" not in params or params["entropy"].kind is not inspect.Parameter.KEYWORD_ONLY:
            raise ValueError(f"register_token_weighting({name!r}): the function must take a keyword-only `entropy`.")
        hparams = {
            p.name: p.default
            for p in params.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
            and p.name != "entropy"
        }
        _TOKEN_WEIGHTINGS[name] = TokenWeightingSpec(name=name, fn=fn, hparams=hparams, requires=tuple(requires))
        return fn

    return decorator


def list_token_weightings() -> list[str]:
    return sorted(_TOKEN_WEIGHTINGS)


def get_token_weighting(name: str) -> TokenWeightingSpec:
    """The `TokenWeightingSpec` registered as ``name``; an unknown name is an error listing the valid ones."""
    return lookup(_TOKEN_WEIGHTINGS, name, "token_weighting")


def check_token_weighting_hparams(name: str, hparams: dict[str, Any]) -> None:
    """Fail on hyper-parameters the weighting does not take (a typo would otherwise be silently ignored)."""
    spec = get_token_weighting(name)
    reject_unknown(hparams, spec.hparams, f"token_weighting {name!r}",
                   f"Its hyper-parameters: {describe_hparams(spec.hparams)}")


def compute_token_weights(name: str, logps: torch.Tensor, mask: torch.Tensor, *,
                          entropy: torch.Tensor | None = None, **hparams: Any) -> torch.Tensor:
    """The ``[B, T]`` weights of the registered weighting ``name``, zero outside ``mask``.

    ``logps``: ``[B, T]`` policy log-prob of each completion token; ``mask``: ``[B, T]`` 1 on completion tokens;
    ``entropy``: optional ``[B, T]`` policy entropy at each position (needed by weightings that require it).
    """
    spec = get_token_weighting(name)
    check_token_weighting_hparams(name, hparams)
    if logps.dim() != 2 or logps.shape != mask.shape:
        raise ValueError(f"token_weighting {name!r}: `logps` {tuple(logps.shape)} and `mask` {tuple(mask.shape)} "
                         "must have the same [B, T] shape.")
    if "entropy" in spec.requires:
        if entropy is None:
            raise ValueError(f"token_weighting {name!r} needs the per-token policy `entropy` (the fused LM head's "
                             "`outputs.entropy`); pass `entropy=`.")
        if entropy.shape != mask.shape:
            raise ValueError(f"token_weighting {name!r}: `entropy` {tuple(entropy.shape)} must match `mask` "
                             f"{tuple(mask.shape)}.")
    weights = spec.fn(logps, mask, entropy=entropy, **hparams)
    if weights.shape != mask.shape:
        raise RuntimeError(f"token weighting {name!r} returned shape {tuple(weights.shape)}, expected "
                           f"{tuple(mask.shape)}")
    return weights * mask.to(weights.dtype)


def validate_token_weighting(name: str, **hparams: Any) -> None:
    """Check a weighting's name and hyper-parameters before training, by evaluating it on a one-sequence input."""
    spec = get_token_weighting(name)
    check_token_weighting_hparams(name, hparams)
    logps = torch.tensor([[-0.1, -2.0]])
    mask = torch.ones_like(logps)
    entropy = torch.tensor([[0.5, 1.5]]) if "entropy" in spec.requires else None
    compute_token_weights(name, logps, mask, entropy=entropy, **hparams)


# ----------------------------------------------------------------------------------------------------------- built-ins
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


@register_token_weighting("entropy", requires=("entropy",))
def entropy_weights(logps: torch.Tensor, mask: torch.Tensor, *, entropy: torch.Tensor | None = None,
                    alpha: float = 1.0) -> torch.Tensor:
    """Entropy token weighting: tokens where the policy is uncertain (high entropy ``H_t``) weigh more.

    ``w_t = H_t^α / mean_{s ∈ completion} H_s^α``, per sequence, so the mean weight over each sequence's completion
    tokens is 1 (the sequence's total weight equals its length, as without weighting); ``α = 0`` gives all-ones
    weights, larger ``α`` sharpens the contrast. A sequence whose completion has zero entropy everywhere (a fully
    confident policy) gets all-ones weights. The weights are always detached (no gradient through the entropy).

    Our design: the issue asks for weights "from token entropy" without a paper formula; the mean-1 normalisation
    keeps the scale of every sequence-level loss (and so the meaning of ``beta``) comparable to the unweighted one.

    Shapes: ``logps`` (unused, except for the dtype), ``mask``, ``entropy`` ``[B, T]`` -> weights ``[B, T]``, zero
    outside the completion.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"`alpha` must be a finite number >= 0, got {alpha!r}.")
    mask_f = mask.float()
    scores = entropy.detach().float().clamp_min(0.0).pow(alpha) * mask_f
    mean = scores.sum(-1, keepdim=True) / mask_f.sum(-1, keepdim=True).clamp_min(1.0)
    weights = torch.where(mean > 0, scores / mean.clamp_min(torch.finfo(torch.float32).tiny), torch.ones_like(scores))
    return (weights * mask_f).to(logps.dtype)
