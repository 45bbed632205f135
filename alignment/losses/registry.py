"""Registry of preference losses: pure functions on a `PreferenceBatch`, selected by name.

A loss is registered with a decorator and has the signature::

    @register_preference_loss("name", requires=("margin",))
    def my_loss(batch: PreferenceBatch, *, beta: float = 0.1, ...) -> tuple[Tensor, dict[str, Tensor]]:
        ...  # returns the per-example loss [B] and method-specific metrics

Every keyword-only parameter with a default is a hyper-parameter, settable from a recipe. The registry checks names
before any forward pass (unknown loss, unknown hyper-parameter, missing extra column) so that bad configuration fails
before training starts, with the valid choices in the message.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .batch import PreferenceBatch

LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class PreferenceLossSpec:
    """What the registry knows about one loss."""

    name: str
    fn: LossFn
    hparams: dict[str, Any] = field(default_factory=dict)  # name -> default
    requires: tuple[str, ...] = ()  # PreferenceBatch extras the loss cannot work without

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""


_PREFERENCE_LOSSES: dict[str, PreferenceLossSpec] = {}
_EXTRAS = ("margin", "weight", "domain")


def register_preference_loss(name: str, *, requires: tuple[str, ...] = ()) -> Callable[[LossFn], LossFn]:
    """Register ``fn`` under ``name``. Hyper-parameters are its keyword-only arguments with defaults."""
    unknown = set(requires) - set(_EXTRAS)
    if unknown:
        raise ValueError(f"register_preference_loss({name!r}): unknown extras {sorted(unknown)}; valid: {_EXTRAS}")

    def decorator(fn: LossFn) -> LossFn:
        if name in _PREFERENCE_LOSSES:
            raise ValueError(f"A preference loss named {name!r} is already registered.")
        params = inspect.signature(fn).parameters
        hparams = {
            p.name: p.default
            for p in params.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
        }
        _PREFERENCE_LOSSES[name] = PreferenceLossSpec(name=name, fn=fn, hparams=hparams, requires=tuple(requires))
        return fn

    return decorator


def list_preference_losses() -> list[str]:
    return sorted(_PREFERENCE_LOSSES)


def get_preference_loss(name: str) -> PreferenceLossSpec:
    try:
        return _PREFERENCE_LOSSES[name]
    except KeyError:
        raise ValueError(
            f"Unknown preference loss_type {name!r}. Valid names: {', '.join(list_preference_losses())}."
        ) from None


def check_hparams(name: str, hparams: dict[str, Any]) -> None:
    """Fail on hyper-parameters the loss does not take (a typo would otherwise be silently ignored)."""
    spec = get_preference_loss(name)
    unknown = sorted(set(hparams) - set(spec.hparams))
    if unknown:
        accepted = ", ".join(f"{k}={v!r}" for k, v in spec.hparams.items()) or "none"
        raise ValueError(f"loss_type {name!r} does not take {unknown}. Its hyper-parameters: {accepted}.")


def compute_preference_loss(
    name: str, batch: PreferenceBatch, **hparams: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Compute the registered loss ``name`` on ``batch``.

    Returns ``(per_example_loss, metrics)``: the loss has shape ``[B]``; metrics are detached tensors of shape ``[B]``
    (averaged by the caller) or scalars. If ``batch.weight`` is set, the per-example loss is multiplied by it here, so
    every registered loss composes with per-example weights through this one mechanism.
    """
    spec = get_preference_loss(name)
    check_hparams(name, hparams)
    missing = [extra for extra in spec.requires if getattr(batch, extra) is None]
    if missing:
        raise ValueError(
            f"loss_type {name!r} needs the per-example column(s) {missing} in the dataset, but the batch has none. "
            f"Add the column (e.g. with scripts/annotate_margins.py for `margin`) or choose another loss_type."
        )
    losses, metrics = spec.fn(batch, **hparams)
    if losses.shape != (batch.batch_size,):
        raise RuntimeError(f"loss {name!r} returned shape {tuple(losses.shape)}, expected [{batch.batch_size}]")
    if batch.weight is not None:
        losses = losses * batch.weight.to(losses.dtype)
    return losses, {key: value.detach() for key, value in metrics.items()}


def validate_preference_loss(name: str, **hparams: Any) -> None:
    """Check a loss name and its hyper-parameters before training, by evaluating the loss on a one-pair batch.

    The loss functions validate their own values (e.g. ``beta > 0``); running them once on dummy inputs surfaces
    those errors at start-up instead of at the first training step.
    """
    spec = get_preference_loss(name)
    check_hparams(name, hparams)
    zeros = torch.zeros(1)
    extras = {extra: torch.zeros(1) for extra in spec.requires}
    dummy = PreferenceBatch.from_sequence_logps(zeros - 1.0, zeros - 2.0, zeros - 1.5, zeros - 1.5, **extras)
    spec.fn(dummy, **hparams)


def require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"`{name}` must be > 0, got {value}.")


def require_in_range(name: str, value: float, low: float, high: float, *, high_inclusive: bool = False) -> None:
    ok = low <= value <= high if high_inclusive else low <= value < high
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"`{name}` must be in [{low}, {high}{bracket}, got {value}.")
