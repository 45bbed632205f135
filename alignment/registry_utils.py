"""What every name-keyed registry here (losses, token weightings, advantages, rewards, domain-weight rules) shares."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, TypeVar

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, kind: str) -> T:
    """``table[name]``; an unknown name is a `ValueError` that lists the valid ones (``kind`` names the field)."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"Unknown {kind} {name!r}. Valid names: {', '.join(sorted(table))}.") from None


def describe_hparams(hparams: Mapping[str, Any]) -> str:
    """``"beta=0.1, tau=2.0"`` (or ``"none"``), for error messages that list what a registry entry accepts."""
    return ", ".join(f"{key}={value!r}" for key, value in hparams.items()) or "none"


def reject_unknown(given: Iterable[str], accepted: Iterable[str], what: str, accepts: str) -> None:
    """Fail on names in ``given`` outside ``accepted`` (a typo would otherwise be silently ignored), as
    ``"<what> does not take [...]. <accepts>."``; ``accepts`` says what it does take."""
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ValueError(f"{what} does not take {unknown}. {accepts}.")
