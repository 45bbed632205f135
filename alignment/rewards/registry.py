"""The reward registry: reward functions for group-relative RL, selected by name.

Reward functions have the signature TRL's ``GRPOTrainer`` calls them with, ``fn(prompts, completions, **kwargs) ->
list[float]`` (``kwargs``: the dataset's other columns, ``completion_ids``, ``trainer_state``, ...). They are
registered by name so that a recipe can list them::

    reward_funcs: [accuracy_reward, format_reward, overlong_penalty]
    reward_kwargs: {overlong_penalty: {max_length: 256, cache_length: 64}}

A registered function takes the completions, then the dataset columns it reads as ordinary parameters (``answer``),
then its hyper-parameters as keyword-only parameters; a keyword-only parameter without a default is a hyper-parameter
the recipe must set. `get_reward_function(name, **hparams)` checks them and returns a picklable callable whose
``__name__`` is ``name`` (TRL logs each reward under its function's ``__name__``).

One reward per file in this package (`accuracy`, `format`, `overlong`, `math_verify`); the package's ``__init__``
imports them so that they register. Rewards given by import path, file or reward model: `alignment.rewards.sources`.
Several rewards scalarised into one with fixed or dynamic weights: `alignment.reward_weightings`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from ..registry import Registry, Spec

RewardFn = Callable[..., list[float]]

# What TRL's GRPOTrainer passes besides the dataset's columns.
_TRL_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric",
                  "environments")


@dataclass(frozen=True)
class RewardSpec(Spec):
    """What the registry knows about one reward function (kernel fields, plus the dataset columns it reads)."""

    columns: tuple[str, ...] = ()  # dataset columns the function reads (e.g. ``answer``)

    def describe_hparams(self) -> str:
        # In signature order, required ones as ``name=<required>`` (what the recipe's reward_kwargs must hold).
        parameters = inspect.signature(self.fn).parameters
        return ", ".join(f"{key}={'<required>' if key in self.required_hparams else repr(self.hparams[key])}"
                         for key in parameters if key in self.accepted_hparams) or "none"


def _dummy_call(spec: RewardSpec, hparams: dict[str, Any]) -> None:
    """One call on a dummy completion runs the function's own value checks before training starts."""
    dummy_columns = {column: ["1"] for column in spec.columns}
    dummy_columns["completion_ids"] = [[1]]
    RewardFunction(spec, hparams)(prompts=["1"], completions=["1"], **dummy_columns)


REWARDS: Registry[RewardSpec] = Registry("reward", RewardSpec, inputs=_TRL_ARGUMENTS, validator=_dummy_call)


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Register ``fn(completions, <columns>..., *, <hparams>, **kwargs)`` under ``name``."""

    def decorator(fn: RewardFn) -> RewardFn:
        params = inspect.signature(fn).parameters
        if "completions" not in params or inspect.Parameter.VAR_KEYWORD not in {p.kind for p in params.values()}:
            raise ValueError(f"register_reward({name!r}): the function must take `completions` and `**kwargs`.")
        columns = tuple(p.name for p in params.values()
                        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name not in _TRL_ARGUMENTS)
        return REWARDS.register(name, columns=columns)(fn)

    return decorator


def list_rewards() -> list[str]:
    return REWARDS.names()


def get_reward_spec(name: str) -> RewardSpec:
    return REWARDS.get(name)


class RewardFunction:
    """A registered reward bound to its hyper-parameters: TRL-callable, picklable, named after the registry entry."""

    def __init__(self, spec: RewardSpec, hparams: dict[str, Any]):
        self.spec = spec
        self.hparams = dict(hparams)
        self.__name__ = spec.name

    def __call__(self, prompts=None, completions=None, **kwargs: Any) -> list[float]:
        if completions is None:
            raise ValueError(f"reward {self.__name__!r} was called without `completions`.")
        return self.spec.fn(completions=completions, **{**kwargs, **self.hparams})

    def __repr__(self) -> str:
        return f"RewardFunction({self.__name__!r}, {self.hparams})"

    def __reduce__(self):  # pickled by name and hyper-parameters (TRL's async rollout worker pickles rewards)
        return _rebuild, (self.spec.name, self.hparams)


def _rebuild(name: str, hparams: dict[str, Any]) -> RewardFunction:
    return get_reward_function(name, **hparams)


def get_reward_function(name: str, **hparams: Any) -> RewardFunction:
    """The registered reward ``name`` with ``hparams`` set, checked now (names, required values, ranges)."""
    spec = REWARDS.check_hparams(name, hparams, required=False)
    missing = [key for key in spec.required_hparams if key not in hparams]
    if missing:  # with the recipe line that fixes it, which the kernel's generic message cannot give
        raise ValueError(f"reward {name!r} needs {missing} in its reward_kwargs (e.g. `reward_kwargs: {{{name}: "
                         f"{{{', '.join(f'{key}: ...' for key in missing)}}}}}`).")
    REWARDS.validator(spec, hparams)
    return RewardFunction(spec, hparams)


def validate_reward(name: str, **hparams: Any) -> None:
    """Check a reward name and its hyper-parameters (same checks as `get_reward_function`)."""
    get_reward_function(name, **hparams)
