"""Registry of token-weighting functions: per-token weights that compose with every sequence-level loss.

A token weighting maps the policy's per-token log-probs of one side of a pair (chosen or rejected) to a ``[B, T]``
weight per completion token::

    @register_token_weighting("name", requires=("entropy",))
    def my_weighting(logps: Tensor, mask: Tensor, *, entropy: Tensor | None = None, alpha: float = 1.0) -> Tensor:
        ...  # [B, T] weights, zero outside the completion

Every keyword-only parameter with a default other than ``entropy`` (a per-call input) is a hyper-parameter, settable
from a recipe (``token_weighting_kwargs``); the table is a kernel `alignment.registry.Registry`. The weights are not a
loss of their own: the trainer puts them into `PreferenceBatch.chosen_token_weight` / ``rejected_token_weight``,
whose sequence sums ``ℓ(y|x) = Σ_t w_t log π(y_t | x, y_<t)`` (policy *and* reference, with the same ``w``) feed
whichever loss is selected. So one weighting composes with every registered loss, and all-ones weights reproduce
the unweighted loss exactly.

``requires`` names per-token model outputs the weighting cannot work without; only ``entropy`` (the policy's
per-token entropy ``H_t = −Σ_v π(v) log π(v)``, the fused LM head's ``outputs.entropy``) exists so far.

A new weighting is one file in this package (``@register_token_weighting("name")`` on its function) plus its import
line in ``__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..registry import Registry, Spec

TokenWeightFn = Callable[..., torch.Tensor]

_TOKEN_OUTPUTS = ("entropy",)  # per-token model outputs a weighting may require


@dataclass(frozen=True)
class TokenWeightingSpec(Spec):
    """What the registry knows about one token weighting. Calling it computes the weights (with checks)."""

    requires: tuple[str, ...] = ()  # per-token model outputs, among `_TOKEN_OUTPUTS`

    def __post_init__(self) -> None:
        unknown = set(self.requires) - set(_TOKEN_OUTPUTS)
        if unknown:
            raise ValueError(
                f"register_token_weighting({self.name!r}): unknown outputs {sorted(unknown)}; valid: {_TOKEN_OUTPUTS}"
            )
        # The trainer always passes `entropy=` (None when no selected weighting requires it).
        if "entropy" not in self.inputs:
            raise ValueError(f"register_token_weighting({self.name!r}): the function must take a keyword-only "
                             "`entropy`.")

    def __call__(self, logps: torch.Tensor, mask: torch.Tensor, *, entropy: torch.Tensor | None = None,
                 **hparams: Any) -> torch.Tensor:
        return compute_token_weights(self.name, logps, mask, entropy=entropy, **hparams)


def _dummy_call(spec: TokenWeightingSpec, hparams: dict[str, Any]) -> None:
    """Evaluate the weighting once on a one-sequence input, so that its own value checks run at start-up."""
    logps = torch.tensor([[-0.1, -2.0]])
    mask = torch.ones_like(logps)
    entropy = torch.tensor([[0.5, 1.5]]) if "entropy" in spec.requires else None
    compute_token_weights(spec.name, logps, mask, entropy=entropy, **hparams)


TOKEN_WEIGHTINGS: Registry[TokenWeightingSpec] = Registry("token_weighting", TokenWeightingSpec,
                                                          inputs=("entropy",), validator=_dummy_call)


def register_token_weighting(name: str, *, requires: tuple[str, ...] = ()) -> Callable[[TokenWeightFn], TokenWeightFn]:
    """Register ``fn`` under ``name``. Hyper-parameters are its keyword-only arguments with defaults (not `entropy`)."""
    return TOKEN_WEIGHTINGS.register(name, requires=tuple(requires))


def list_token_weightings() -> list[str]:
    return TOKEN_WEIGHTINGS.names()


def get_token_weighting(name: str) -> TokenWeightingSpec:
    """The `TokenWeightingSpec` registered as ``name``; an unknown name is an error listing the valid ones."""
    return TOKEN_WEIGHTINGS.get(name)


def check_token_weighting_hparams(name: str, hparams: dict[str, Any]) -> TokenWeightingSpec:
    """Fail on hyper-parameters the weighting does not take (a typo would otherwise be silently ignored)."""
    return TOKEN_WEIGHTINGS.check_hparams(name, hparams)


def compute_token_weights(name: str, logps: torch.Tensor, mask: torch.Tensor, *,
                          entropy: torch.Tensor | None = None, **hparams: Any) -> torch.Tensor:
    """The ``[B, T]`` weights of the registered weighting ``name``, zero outside ``mask``.

    ``logps``: ``[B, T]`` policy log-prob of each completion token; ``mask``: ``[B, T]`` 1 on completion tokens;
    ``entropy``: optional ``[B, T]`` policy entropy at each position (needed by weightings that require it).
    """
    spec = check_token_weighting_hparams(name, hparams)
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
    TOKEN_WEIGHTINGS.validate(name, **hparams)
