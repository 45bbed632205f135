"""Registry of group-relative advantage estimators: pure functions from rewards to advantages, selected by name.

An estimator sees the rewards of one batch laid out group by group (``num_groups`` prompts, ``group_size``
completions each) as a ``[num_groups, group_size]`` tensor and returns advantages of the same shape::

    @register_advantage_estimator("name", requires=("completion_lengths",))
    def my_estimator(rewards: Tensor, *, completion_lengths: Tensor, eps: float = 1e-6) -> Tensor:
        ...  # [num_groups, group_size] advantages, one scalar per completion (broadcast to its tokens by the trainer)

Keyword-only parameters with a default are hyper-parameters (settable from a recipe), except the names in
`ADVANTAGE_INPUTS`, which are per-batch inputs the caller supplies:

* ``completion_lengths`` ``[N]``: completion length in tokens (handed to the estimator as ``[num_groups, G]``);
* ``baseline_rewards`` ``[num_groups]``: reward of one greedy rollout per prompt (ReMax);
* ``max_completion_length`` ``int``: the generation limit the lengths are measured against;
* ``completion_mean_logps`` ``[N]``: length-normalised log-prob ``(1/|o|) Σ_t log π(o_t)`` of each completion under
  the rollout policy (``[num_groups, G]`` for the estimator; optional input of ``drpo``).

``requires`` lists the inputs an estimator cannot work without (keyword-only, no default); an input it merely can use
is a keyword-only parameter defaulting to ``None``. ``scale_invariant`` (declared by every estimator) says whether
multiplying every reward by a constant ``c > 0`` leaves its advantages unchanged: a bool, or a function of the
hyper-parameters when it depends on them (GRPO's ``scale_rewards``); `AdvantageEstimatorSpec.is_scale_invariant`
reads it for a configuration. ``loss_type`` names the TRL loss aggregation an estimator's
advantages are derived for, when only one reproduces its gradient (`resolve_loss_type` picks it when a config leaves
``loss_type`` unset and rejects any other). The public entry point is `compute_advantages`; names,
hyper-parameters and inputs are checked there (and by `validate_advantage_estimator` at start-up) with the valid
choices in the message. The table is a kernel `alignment.registry.Registry` (`ADVANTAGE_ESTIMATORS`); a new
estimator is one file in this package plus its import line in ``__init__.py``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from ..registry import Registry, Spec

AdvantageFn = Callable[..., torch.Tensor]

# Input name -> how it is laid out in a batch of N = num_groups * group_size completions.
_PER_SAMPLE, _PER_GROUP, _SCALAR_INT = "per-sample [N]", "per-group [num_groups]", "int"
ADVANTAGE_INPUTS: dict[str, str] = {
    "completion_lengths": _PER_SAMPLE,
    "baseline_rewards": _PER_GROUP,
    "max_completion_length": _SCALAR_INT,
    "completion_mean_logps": _PER_SAMPLE,
}


@dataclass(frozen=True)
class AdvantageEstimatorSpec(Spec):
    """What the registry knows about one advantage estimator: the kernel's `Spec` (``inputs``: the entries of
    `ADVANTAGE_INPUTS` it takes) plus the family's declared properties."""

    requires: tuple[str, ...] = ()  # inputs (from ADVANTAGE_INPUTS) the estimator cannot work without
    loss_type: str | None = None  # the only TRL loss aggregation its advantages are derived for (None: any)
    # Whether advantages(c · rewards) == advantages(rewards) for every c > 0: a bool, or ``hparams -> bool`` (the
    # estimator's defaults updated with a configuration's values) when a hyper-parameter decides it. None: undeclared,
    # refused, so that a new estimator states it (reward weighting relies on it, see `is_scale_invariant`).
    scale_invariant: bool | Callable[[dict[str, Any]], bool] | None = None

    def __post_init__(self) -> None:
        # A keyword-only parameter without a default is an input the trainer must always pass: it must be declared
        # in `requires` (the trainer reads `requires` to know what to compute) and be an input, not a hyper-parameter.
        no_default = {*self.required_inputs, *self.required_hparams}
        if no_default != set(self.requires):
            raise ValueError(
                f"register_advantage_estimator({self.name!r}): keyword-only parameters without a default "
                f"{sorted(no_default)} must be exactly the required inputs {sorted(self.requires)}."
            )
        optional = self.optional_inputs
        defaults = inspect.signature(self.fn).parameters
        if any(defaults[key].default is not None for key in optional):
            raise ValueError(
                f"register_advantage_estimator({self.name!r}): optional inputs {optional} must default to None."
            )
        if self.scale_invariant is None:
            raise ValueError(f"register_advantage_estimator({self.name!r}): declare `scale_invariant` (True, False, "
                             "or a function of the hyper-parameters): whether multiplying every reward by c > 0 "
                             "leaves the advantages unchanged.")

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        """The inputs it uses when given."""
        return tuple(key for key in self.inputs if key not in self.requires)

    def is_scale_invariant(self, hparams: Mapping[str, Any] | None = None) -> bool:
        """Whether multiplying every reward by a constant ``c > 0`` leaves the advantages unchanged, with the
        hyper-parameters ``hparams`` (a configuration's values; the others at their defaults)."""
        if callable(self.scale_invariant):
            return bool(self.scale_invariant({**self.hparams, **(hparams or {})}))
        return bool(self.scale_invariant)


def _dummy_call(spec: AdvantageEstimatorSpec, hparams: dict[str, Any]) -> None:
    """One call on two groups of two completions, with every input: the estimators validate their own values (e.g.
    ``eps > 0``), which surfaces those errors at start-up instead of at the first training step."""
    dummy_inputs = {
        "completion_lengths": torch.tensor([1, 2, 3, 4]),
        "baseline_rewards": torch.tensor([0.5, 0.5]),
        "max_completion_length": 4,
        "completion_mean_logps": torch.tensor([-1.0, -1.5, -2.0, -2.5]),
    }
    compute_advantages(spec.name, torch.tensor([0.0, 1.0, 1.0, 0.0]), 2, **dummy_inputs, **hparams)


ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimatorSpec] = Registry(
    "advantage_estimator", AdvantageEstimatorSpec, inputs=tuple(ADVANTAGE_INPUTS), validator=_dummy_call
)


def register_advantage_estimator(
    name: str, *, requires: tuple[str, ...] = (), loss_type: str | None = None,
    scale_invariant: bool | Callable[[dict[str, Any]], bool] | None = None,
) -> Callable[[AdvantageFn], AdvantageFn]:
    """Register ``fn`` under ``name``. ``requires`` must name keyword-only parameters of ``fn`` without defaults;
    ``loss_type``: the TRL loss aggregation the advantages need (None: any); ``scale_invariant``: see
    `AdvantageEstimatorSpec` (required)."""
    unknown = sorted(set(requires) - set(ADVANTAGE_INPUTS))
    if unknown:
        raise ValueError(
            f"register_advantage_estimator({name!r}): unknown inputs {unknown}; valid: {sorted(ADVANTAGE_INPUTS)}."
        )
    return ADVANTAGE_ESTIMATORS.register(name, requires=tuple(requires), loss_type=loss_type,
                                         scale_invariant=scale_invariant)


def list_advantage_estimators() -> list[str]:
    return ADVANTAGE_ESTIMATORS.names()


def get_advantage_estimator(name: str) -> AdvantageEstimatorSpec:
    return ADVANTAGE_ESTIMATORS.get(name)


def _prepare_input(name: str, value: Any, num_groups: int, group_size: int, device: torch.device) -> Any:
    """Check one input's layout, move it to the rewards' device, reshape per-sample ones to ``[num_groups, G]``."""
    layout = ADVANTAGE_INPUTS[name]
    if layout == _SCALAR_INT:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        return value
    value = torch.as_tensor(value).detach()
    expected = (num_groups * group_size,) if layout == _PER_SAMPLE else (num_groups,)
    if tuple(value.shape) != expected:
        raise ValueError(f"`{name}` must be {layout} with shape {list(expected)}, got {list(value.shape)}.")
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"`{name}` has non-finite values.")
    value = value.to(device)
    return value.view(num_groups, group_size) if layout == _PER_SAMPLE else value


def compute_advantages(name: str, rewards: torch.Tensor, group_size: int, **kwargs: Any) -> torch.Tensor:
    """Advantages of the registered estimator ``name``.

    Args:
        name: a registered estimator (`list_advantage_estimators()`).
        rewards: ``[N]`` float rewards, ``N = num_groups * group_size``, laid out group by group (the
            completions of prompt 0, then those of prompt 1, ...), as TRL's ``GRPOTrainer`` gathers them.
        group_size: completions per prompt (TRL's ``num_generations``).
        **kwargs: the estimator's hyper-parameters and per-batch inputs (`ADVANTAGE_INPUTS`). Inputs the estimator
            does not use are ignored, so a trainer may pass every input it has; unknown names are an error.

    Returns:
        ``[N]`` advantages (detached, the dtype of ``rewards``), one per completion.
    """
    inputs = {key: value for key, value in kwargs.items() if key in ADVANTAGE_INPUTS}
    hparams = {key: value for key, value in kwargs.items() if key not in ADVANTAGE_INPUTS}
    spec = ADVANTAGE_ESTIMATORS.check_hparams(name, hparams)
    missing = [key for key in spec.requires if inputs.get(key) is None]
    if missing:
        raise ValueError(
            f"advantage_estimator {name!r} needs the input(s) {missing} "
            f"({', '.join(f'{key}: {ADVANTAGE_INPUTS[key]}' for key in missing)}); pass them to compute_advantages."
        )
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"`group_size` must be a positive int, got {group_size!r}.")
    rewards = torch.as_tensor(rewards).detach()
    if rewards.dim() != 1 or rewards.numel() == 0 or rewards.numel() % group_size:
        raise ValueError(
            f"`rewards` must be a non-empty 1-D tensor whose length is a multiple of group_size={group_size}, "
            f"got shape {list(rewards.shape)}."
        )
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    if not torch.isfinite(rewards).all():
        raise ValueError("`rewards` has non-finite values (NaN for unscorable completions?); replace them first.")
    num_groups = rewards.numel() // group_size
    used = {key: _prepare_input(key, inputs[key], num_groups, group_size, rewards.device)
            for key in spec.inputs if inputs.get(key) is not None}
    with torch.no_grad():
        advantages = spec.fn(rewards.view(num_groups, group_size), **used, **hparams)
    if tuple(advantages.shape) != (num_groups, group_size):
        raise RuntimeError(
            f"advantage estimator {name!r} returned shape {list(advantages.shape)}, "
            f"expected {[num_groups, group_size]}."
        )
    return advantages.reshape(-1).to(rewards.dtype)


def validate_advantage_estimator(name: str, **hparams: Any) -> None:
    """Check an estimator name and its hyper-parameters before training, by running it once on dummy inputs
    (`_dummy_call`, the registry's validator)."""
    ADVANTAGE_ESTIMATORS.validate(name, **hparams)


def resolve_loss_type(name: str, loss_type: str | None, *, default: str) -> str:
    """The TRL ``loss_type`` to train estimator ``name`` with: ``loss_type`` when set, else the aggregation the
    estimator is derived for, else ``default`` (TRL's). An explicit choice other than the estimator's is an error."""
    required = get_advantage_estimator(name).loss_type
    if loss_type is None:
        return required or default
    if required is not None and loss_type != required:
        raise ValueError(
            f"advantage_estimator {name!r} needs `loss_type: {required}` (its advantages reproduce the method's "
            f"gradient only under that aggregation), got `loss_type: {loss_type}`. Set `loss_type: {required}` or "
            f"remove `loss_type` from the recipe."
        )
    return loss_type


def group_std(grouped: torch.Tensor, *, unbiased: bool = True) -> torch.Tensor:
    """Std of each row of ``[num_groups, G]`` -> ``[num_groups, 1]``; 0 for single-element rows (Bessel undefined)."""
    if grouped.shape[1] < 2:
        return torch.zeros_like(grouped[:, :1])
    return grouped.std(dim=1, keepdim=True, unbiased=unbiased)
