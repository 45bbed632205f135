"""The one registry kernel every algorithm family uses: a name -> `Spec` table filled by a decorator.

A family (preference losses, token weightings, advantage estimators, policy losses, rewards, reward weightings,
domain-weight rules) creates one `Registry` in its ``registry.py`` and registers pure functions with it::

    LOSSES = Registry("preference loss_type", PreferenceLossSpec, inputs=("state",), validator=_dummy_call)

    @LOSSES.register("dpo", requires=("margin",))
    def dpo(batch, *, beta: float = 0.1): ...

What the kernel does, once for every family (so that each family only states what is its own):

* rejects a second registration under the same name;
* reads the function's keyword-only parameters: those the family declares as per-call ``inputs`` (what the trainer
  computes at every call: per-batch tensors, the step, a loss state) are inputs; the others with a default are
  **hyper-parameters** (settable from a recipe); the others without a default are **required hyper-parameters**
  (the recipe must set them);
* stores a frozen spec (a subclass of `Spec` per family, whose extra fields are the family's *declared properties*,
  e.g. a loss's ``requires`` or an estimator's ``scale_invariant``: declared where the method is written, never
  probed numerically);
* looks names up with the valid choices in the error (``get``), lists and describes entries (``names``,
  ``describe``), rejects unknown or missing hyper-parameters (``check_hparams``) and validates a configuration before
  training (``validate``: hyper-parameter names, then the family's ``validator``, typically one call on dummy inputs
  so the method's own value checks run at start-up instead of at the first step).

The ``require_*`` helpers are the value checks methods share for their hyper-parameters.

Written by hand: no library we depend on has a typed name registry with signature introspection (verl's
``register_adv_est`` / ``register_policy_loss`` are plain dicts without hyper-parameter checks).
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Generic, Iterable, Iterator, Mapping, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclass(frozen=True)
class Spec:
    """What a registry knows about one entry. Families subclass it with their declared properties (every extra field
    needs a default); ``__post_init__`` of a subclass is the place to reject an invalid declaration."""

    name: str
    fn: Callable[..., Any]
    hparams: Mapping[str, Any] = field(default_factory=dict)  # hyper-parameter name -> default
    required_hparams: tuple[str, ...] = ()  # hyper-parameters without a default (the recipe must set them)
    inputs: tuple[str, ...] = ()  # per-call inputs among the keyword-only parameters, in signature order
    required_inputs: tuple[str, ...] = ()  # the inputs without a default

    @property
    def summary(self) -> str:
        """The first line of the function's docstring."""
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""

    @property
    def accepted_hparams(self) -> tuple[str, ...]:
        return (*self.hparams, *self.required_hparams)

    def describe_hparams(self) -> str:
        """``"beta=0.1, tau (required)"`` (or ``"none"``), for messages that list what an entry accepts."""
        parts = [f"{key}={value!r}" for key, value in self.hparams.items()]
        parts += [f"{key} (required)" for key in self.required_hparams]
        return ", ".join(parts) or "none"


S = TypeVar("S", bound=Spec)


class Registry(Generic[S]):
    """A name -> spec table for one algorithm family.

    Args:
        kind: what a recipe calls an entry, used in every message (``"preference loss_type"``).
        spec_type: the family's `Spec` subclass; `register`'s keyword arguments are its extra fields.
        inputs: keyword-only parameter names that are per-call inputs in every entry of this family (not
            hyper-parameters). An entry may declare more with ``register(..., inputs=(...))``.
        validator: ``validator(spec, hparams)`` raises a ValueError for invalid hyper-parameter values; `validate`
            calls it after the names are checked (``hparams`` holds only what the recipe set).
    """

    def __init__(self, kind: str, spec_type: type[S] = Spec, *, inputs: Collection[str] = (),
                 validator: Callable[[S, dict[str, Any]], None] | None = None):
        self.kind = kind
        self.spec_type = spec_type
        self.inputs = tuple(inputs)
        self.validator = validator
        self._specs: dict[str, S] = {}

    def register(self, name: str, *, inputs: Collection[str] = (), **properties: Any) -> Callable[[F], F]:
        """Decorator: store ``fn`` under ``name`` with its hyper-parameters read from its signature.

        ``inputs``: per-call inputs of this entry on top of the family's; each must be a keyword-only parameter.
        ``properties``: the family's declared properties (fields of its spec type).
        """
        def decorator(fn: F) -> F:
            if name in self._specs:
                raise ValueError(f"A {self.kind} named {name!r} is already registered.")
            self._specs[name] = self.spec_type(name=name, fn=fn, **signature_parts(fn, (*self.inputs, *inputs),
                                                                                   declared=tuple(inputs), owner=name),
                                               **properties)
            return fn

        return decorator

    def unregister(self, name: str) -> S:
        """Remove ``name`` and return its spec (a test that registers a throwaway entry removes it again, so the
        family's listings stay as the package defines them)."""
        self.get(name)  # an unknown name is the same error as in `get`
        return self._specs.pop(name)

    def get(self, name: str) -> S:
        """The spec of ``name``; an unknown name is a ValueError listing the valid ones."""
        return lookup(self._specs, name, self.kind)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[S]:
        return iter(self._specs[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._specs)

    def describe(self) -> str:
        """One line per entry: ``name: summary (hyper-parameters: ...)``."""
        return "\n".join(f"{spec.name}: {spec.summary} (hyper-parameters: {spec.describe_hparams()})" for spec in self)

    def check_hparams(self, name: str, hparams: Mapping[str, Any], *, allow: Iterable[str] = (),
                      required: bool = True) -> S:
        """The spec of ``name`` after rejecting hyper-parameters it does not take (``allow``: other names the caller
        accepts beside them, e.g. per-call inputs) and, when ``required``, missing required ones."""
        spec = self.get(name)
        reject_unknown(hparams, (*spec.accepted_hparams, *allow), f"{self.kind} {name!r}",
                       f"Its hyper-parameters: {spec.describe_hparams()}")
        missing = [key for key in spec.required_hparams if key not in hparams] if required else []
        if missing:
            raise ValueError(f"{self.kind} {name!r} needs the hyper-parameter(s) {missing}; set them in the recipe. "
                             f"Its hyper-parameters: {spec.describe_hparams()}.")
        return spec

    def validate(self, name: str, **hparams: Any) -> S:
        """Check a configuration before training: the name, the hyper-parameter names, then their values (the
        family's validator)."""
        spec = self.check_hparams(name, hparams)
        if self.validator is not None:
            self.validator(spec, dict(hparams))
        return spec


def signature_parts(fn: Callable[..., Any], inputs: Collection[str], *, declared: Collection[str] = (),
                    owner: str = "") -> dict[str, Any]:
    """Split ``fn``'s keyword-only parameters into inputs and hyper-parameters (the `Spec` fields of those names).

    ``declared``: inputs the entry named itself, which must exist in the signature (a typo would otherwise make an
    input silently never passed)."""
    keyword_only = {p.name: p for p in inspect.signature(fn).parameters.values()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY}
    absent = [key for key in declared if key not in keyword_only]
    if absent:
        raise ValueError(f"{owner!r}: inputs {absent} are not keyword-only parameters of {fn.__name__}.")
    empty = inspect.Parameter.empty
    entry_inputs = tuple(key for key in keyword_only if key in inputs)
    return {
        "hparams": {key: p.default for key, p in keyword_only.items() if key not in inputs and p.default is not empty},
        "required_hparams": tuple(key for key, p in keyword_only.items() if key not in inputs and p.default is empty),
        "inputs": entry_inputs,
        "required_inputs": tuple(key for key in entry_inputs if keyword_only[key].default is empty),
    }


def lookup(table: Mapping[str, T], name: str, kind: str) -> T:
    """``table[name]``; an unknown name is a `ValueError` that lists the valid ones (``kind`` names the field)."""
    try:
        return table[name]
    except (KeyError, TypeError):
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


# ------------------------------------------------------------------------------ value checks methods share


def require_positive(name: str, value: Any) -> None:
    """``value`` is a real number > 0 (a bool is not: YAML's ``yes`` would otherwise read as 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"`{name}` must be a number > 0, got {value!r}.")


def require_in_range(name: str, value: Any, low: float, high: float, *, high_inclusive: bool = False) -> None:
    """``low <= value < high`` (``<= high`` when ``high_inclusive``)."""
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and (low <= value <= high if high_inclusive else low <= value < high))
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"`{name}` must be in [{low}, {high}{bracket}, got {value!r}.")


def require_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be true or false, got {value!r}.")


def require_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")
