"""The registry of domain-weight update rules (DoReMi, DoGE, Velocitune, Cooldown, Group DRO, DGA, ScaleBiO): pure
functions by name.

A rule maps the current domain weights (a distribution over K domains) and this step's per-domain signals to new
weights::

    @register_domain_update("name", inputs=("losses",))
    def my_rule(weights: Tensor, *, step: int, losses: Tensor, eta: float = 1.0) -> Tensor:
        ...  # [K] new weights, non-negative, summing to 1

``inputs`` names the per-step signals (per-domain losses, gradients, ...) the caller computes; every other
keyword-only parameter with a default is a hyper-parameter, settable from a recipe and checked before training by
`validate_domain_update`. Call rules through `update_domain_weights`, which checks names, shapes and that the
weights stay a distribution. `DomainWeightState` (`alignment.domain_rules.state`) keeps the current weights, their
running average (DoReMi and DoGE output the average, not the last weights) and the step, and is saved in checkpoints.

A rule that keeps state between updates (ScaleBiO's AdamW moments) declares the names of its tensors,
``register_domain_update("name", inputs=(...), buffers=("exp_avg",))``; it then takes a keyword-only ``buffers``
(``{name: tensor}``, empty at the first update) and returns ``(new_weights, new_buffers)``, still a pure function.
`update_domain_state` passes ``DomainWeightState.buffers`` in and stores what comes back, so the buffers are
checkpointed with the weights.

One rule per module of this package (`doremi`, `doge`, `velocitune`, `cooldown`, `group_dro`, `dga`, `scalebio`); the
package's ``__init__`` imports them so that they register. The helpers at the end are the math several rules share.
A rule may also have required hyper-parameters (keyword-only, no default: DGA's ``target_domains``).

Unknown rule names, inputs or hyper-parameters fail with the valid names in the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..registry import Registry, Spec, reject_unknown
from .state import DomainWeightState, check_distribution

UpdateFn = Callable[..., torch.Tensor]
# The keyword-only parameter through which a rule with state receives its buffers.
BUFFERS_INPUT = "buffers"


@dataclass(frozen=True)
class DomainUpdateSpec(Spec):
    """What the registry knows about one update rule: the kernel's fields (``inputs`` are the per-step signals plus
    ``step``, and ``buffers`` for a rule with state), ``check``, which validates hyper-parameter values (called with
    all of them, defaults filled), and ``buffers``, the names of the tensors the rule keeps between updates."""

    check: Callable[..., None] | None = None
    buffers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if "step" not in self.inputs:
            raise ValueError(f"register_domain_update({self.name!r}): the rule must take a keyword-only `step`.")
        if bool(self.buffers) != (BUFFERS_INPUT in self.inputs):
            raise ValueError(f"register_domain_update({self.name!r}): a rule takes a keyword-only `buffers` exactly "
                             f"when it declares buffer names (declared: {list(self.buffers)}).")

    @property
    def signals(self) -> tuple[str, ...]:
        """The per-step signals the caller computes (per-domain losses, gradients, ...), ``step`` and ``buffers``
        aside."""
        return tuple(key for key in self.inputs if key not in ("step", BUFFERS_INPUT))

    @property
    def required(self) -> tuple[str, ...]:
        """The signals without a default: the rule cannot run without them (``buffers`` start empty)."""
        return tuple(key for key in self.required_inputs if key not in ("step", BUFFERS_INPUT))


def _check_values(spec: DomainUpdateSpec, hparams: dict[str, Any]) -> None:
    if spec.check is not None:
        spec.check(**{**spec.hparams, **hparams})


DOMAIN_UPDATES: Registry[DomainUpdateSpec] = Registry(
    "domain-weight update rule", DomainUpdateSpec, inputs=("step",), validator=_check_values)


def register_domain_update(
    name: str, *, inputs: Sequence[str], check: Callable[..., None] | None = None, buffers: Sequence[str] = ()
) -> Callable[[UpdateFn], UpdateFn]:
    """Register ``fn(weights, *, step, <inputs>, <hparams>) -> new_weights`` under ``name``.

    ``inputs`` must be keyword-only parameters of ``fn``; the remaining keyword-only parameters with defaults are the
    rule's hyper-parameters. ``check(**hparams)`` (optional) raises a ValueError for invalid hyper-parameter values.
    ``buffers``: names of the tensors the rule keeps between updates; then ``fn`` also takes a keyword-only
    ``buffers`` (``{name: tensor}``, empty at the first update) and returns ``(new_weights, new_buffers)``.
    """
    buffers = tuple(buffers)
    inputs = (*inputs, BUFFERS_INPUT) if buffers else tuple(inputs)
    return DOMAIN_UPDATES.register(name, inputs=inputs, check=check, buffers=buffers)


def list_domain_updates() -> list[str]:
    return DOMAIN_UPDATES.names()


def get_domain_update(name: str) -> DomainUpdateSpec:
    return DOMAIN_UPDATES.get(name)


def _describe(spec: DomainUpdateSpec) -> str:
    return f"inputs: {', '.join(spec.signals) or 'none'}; hyper-parameters: {spec.describe_hparams()}"


def validate_domain_update(name: str, **hparams: Any) -> None:
    """Check a rule name and its hyper-parameters (names and values) before training starts."""
    DOMAIN_UPDATES.validate(name, **hparams)


def update_domain_weights(name: str, weights: torch.Tensor, *, step: int, **inputs_and_hparams: Any) -> torch.Tensor:
    """Apply the registered rule ``name`` to ``weights`` ([K], a distribution) at update step ``step`` (0-based).

    ``inputs_and_hparams`` holds the rule's per-step inputs and any hyper-parameters to override (see
    `list_domain_updates()` and each rule's docstring). Returns the new weights, [K], same dtype, summing to 1.
    A rule with buffers starts here from the ``buffers`` given (none: a fresh state, e.g. AdamW's zero moments) and
    its new buffers are dropped: to keep them between updates, use `update_domain_state`.
    """
    return _apply(name, weights, step=step, **inputs_and_hparams)[0]


def update_domain_state(name: str, state: DomainWeightState, **inputs_and_hparams: Any) -> torch.Tensor:
    """One update of ``state`` by the rule ``name``: the rule gets ``state.weights``, ``state.step`` and, for a rule
    with buffers, its declared ones from ``state.buffers``; the new weights are recorded and the buffers the rule
    returns replace its declared ones in ``state.buffers`` (checkpointed with the state). Returns the new weights."""
    spec = get_domain_update(name)
    if BUFFERS_INPUT in inputs_and_hparams:
        raise ValueError(f"update_domain_state({name!r}) takes the buffers from the state; do not pass `buffers`.")
    kept = {key: state.buffers[key] for key in spec.buffers if key in state.buffers}
    new, buffers = _apply(name, state.weights, step=state.step, **({BUFFERS_INPUT: kept} if spec.buffers else {}),
                          **inputs_and_hparams)
    state.record(new)
    for key in spec.buffers:  # a buffer the rule no longer returns (e.g. `sgd` after `adamw`) is not kept stale
        state.buffers.pop(key, None)
    state.buffers.update(buffers)
    return new


def _apply(name: str, weights: torch.Tensor, *, step: int,
           **inputs_and_hparams: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Checks, the rule call and the checks of what it returns: (new weights, new buffers; {} for a rule without)."""
    spec = get_domain_update(name)
    reject_unknown(inputs_and_hparams, [*spec.inputs, *spec.accepted_hparams], f"Domain-weight update rule {name!r}",
                   f"Its {_describe(spec)}")
    missing = [i for i in spec.required if inputs_and_hparams.get(i) is None]
    if missing:
        raise ValueError(f"Domain-weight update rule {name!r} needs the input(s) {missing}. Its {_describe(spec)}.")
    missing = [key for key in spec.required_hparams if inputs_and_hparams.get(key) is None]
    if missing:
        raise ValueError(f"Domain-weight update rule {name!r} needs the hyper-parameter(s) {missing} (recipe: "
                         f"`domain_reweighting_kwargs`). Its {_describe(spec)}.")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"`step` must be a non-negative integer, got {step!r}.")
    check_distribution(weights)
    hparams = {k: v for k, v in inputs_and_hparams.items() if k in spec.accepted_hparams}
    _check_values(spec, hparams)
    if spec.buffers:
        given = dict(inputs_and_hparams.get(BUFFERS_INPUT) or {})
        reject_unknown(given, spec.buffers, f"The buffers of domain-weight update rule {name!r}",
                       f"It keeps {list(spec.buffers)}")
        # Copies: the rule is pure and the caller's tensors (a checkpointed state) must not change under it.
        inputs_and_hparams[BUFFERS_INPUT] = {key: torch.as_tensor(value).detach().clone()
                                             for key, value in given.items()}
    with torch.no_grad():
        out = spec.fn(weights.detach(), step=step, **inputs_and_hparams)
    new, buffers = out if spec.buffers else (out, {})
    if new.shape != weights.shape:
        raise RuntimeError(f"rule {name!r} returned shape {tuple(new.shape)}, expected {tuple(weights.shape)}")
    check_distribution(new, f"weights returned by rule {name!r}")
    unknown = sorted(set(buffers) - set(spec.buffers))
    if unknown:
        raise RuntimeError(f"rule {name!r} returned buffers {unknown} it does not declare ({list(spec.buffers)}).")
    return new.to(weights.dtype), {key: value.detach().cpu().clone() for key, value in buffers.items()}


# ---------------------------------------------------------------------------------- math several rules share


def _as_domain_vector(value: Any, num_domains: int, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=torch.float64)
    if tensor.shape != (num_domains,):
        raise ValueError(f"`{what}` must have shape [K] = [{num_domains}] (one value per domain), got "
                         f"{tuple(tensor.shape)}.")
    return tensor


def _smooth(weights: torch.Tensor, eps: float) -> torch.Tensor:
    """Mix with the uniform distribution: (1 − ε)·w + ε/K."""
    return (1.0 - eps) * weights + eps / weights.numel()


def _exponentiated_step(weights: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """softmax(log w + scores): the multiplicative-weights / mirror-descent step, in log space for stability."""
    return torch.softmax(torch.log(weights) + scores, dim=0)


def _split_targets(grads: Any, target_domains: Any, num_domains: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-domain gradients ``grads`` [K, P] and the indices ``target_domains`` -> (``in_target`` [K] bool, the
    alignment ``a`` [K] with a_i = ⟨g_i, ḡ_target⟩, ḡ_target the mean of the target domains' rows).

    For rules that specialise to a target set held as domains of the training data (DGA's specialised set,
    ScaleBiO's validation set), as DoGE's ``target_domains`` select targets among the training domains."""
    grads = torch.as_tensor(grads).double()
    if grads.ndim != 2 or grads.shape[0] != num_domains:
        raise ValueError(f"{rule}: `grads` must be [K, P] = [{num_domains}, P], got {tuple(grads.shape)}.")
    targets = _target_indices(target_domains, num_domains, rule)
    in_target = torch.zeros(num_domains, dtype=torch.bool)
    in_target[targets] = True
    return in_target, grads @ grads[in_target].mean(dim=0)


def _target_indices(target_domains: Any, num_domains: int, rule: str) -> list[int]:
    """``target_domains`` as a checked list of distinct indices leaving at least one training domain."""
    if isinstance(target_domains, (str, bytes)) or not hasattr(target_domains, "__len__") or not target_domains:
        raise ValueError(f"{rule}: `target_domains` must list the indices of the target domains (sorted domain-name "
                         f"order, as in `domain_weight/<name>` logs), e.g. [2]; got {target_domains!r}.")
    if any(isinstance(j, bool) or not isinstance(j, int) for j in target_domains):
        raise ValueError(f"{rule}: `target_domains` must be integer indices, got {list(target_domains)}.")
    targets = [int(j) for j in target_domains]
    if len(set(targets)) != len(targets) or (num_domains and any(j < 0 or j >= num_domains for j in targets)):
        raise ValueError(f"{rule}: `target_domains` must be distinct indices in [0, {num_domains}), got {targets}.")
    if num_domains and len(targets) >= num_domains:
        raise ValueError(f"{rule}: `target_domains` {targets} leaves no training domain to reweight; at least one "
                         "of the K domains must be outside the target set.")
    return targets


def _with_target_share(generic: torch.Tensor, in_target: torch.Tensor, target_share: float) -> torch.Tensor:
    """[K] weights: ``generic`` (a distribution over the non-target domains) scaled to 1 − s, and the fixed share s
    split evenly over the target domains."""
    out = torch.zeros(in_target.numel(), dtype=torch.float64)
    out[~in_target] = (1.0 - target_share) * generic
    out[in_target] = target_share / int(in_target.sum())
    return out
