"""Reward callables that refuse NaN / inf scores, naming the reward function, the completion and the fix.

Why: TRL 1.16's `GRPOTrainer._calculate_rewards` turns a reward function's ``None`` ("this reward does not apply to
this completion") into NaN and then skips NaN (``nansum``), so once the scores are in a tensor a NaN the function
computed by mistake (``0/0``, ``log(0)``, ``float("nan")`` for "no score") is indistinguishable from a deliberate
``None``: it is silently dropped, and when it is the only reward the run stops with "All reward functions returned
None" / "Every reward function returned None", which points at the wrong cause. The check has to see the function's
own return value, so each callable is wrapped before TRL gets it. An infinite score is refused too: one inf in a
group makes the group's mean and std inf and every advantage of that group NaN.

Reward models (``nn.Module``) and Hub ids are left as they are: TRL calls them itself, they never return None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


def _is_non_finite(value: Any) -> bool:
    if value is None:
        return False
    try:
        return not math.isfinite(float(value))  # float, int, bool, numpy and 0-dim torch scalars
    except (TypeError, ValueError):
        return False  # not a number at all: TRL's own tensor conversion reports it


def check_reward_values(name: str, values: Sequence[Any], completions: Sequence[Any] | None = None) -> Sequence[Any]:
    """`values` unchanged, or `ValueError` naming reward `name`, the first NaN/inf score and its completion."""
    bad = [i for i, value in enumerate(values) if _is_non_finite(value)]
    if bad:
        first = bad[0]
        shown = "" if completions is None or first >= len(completions) else f" ({completions[first]!r:.120})"
        raise ValueError(
            f"Reward function {name!r} returned {float(values[first])} for completion {first}{shown} "
            f"({len(bad)} of {len(values)} scores in this batch are NaN/inf). A NaN is not 'no reward': TRL would "
            f"drop it silently like None. Return None for completions this reward does not apply to, and fix the "
            f"computation (e.g. a 0/0 or log(0)) for the others."
        )
    return values


class CheckedReward:
    """`func` with its scores checked by `check_reward_values`; same name (TRL logs by it), picklable if `func` is."""

    def __init__(self, func: Callable):
        from trl.trainer.utils import get_callable_name

        self.func = func
        self.__name__ = get_callable_name(func)

    def __call__(self, *args: Any, **kwargs: Any) -> Sequence[Any]:
        return check_reward_values(self.__name__, self.func(*args, **kwargs), kwargs.get("completions"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.func!r})"


class AsyncCheckedReward(CheckedReward):
    """`CheckedReward` for an async reward function (TRL runs those on its event loop, `is_async_callable`)."""

    async def __call__(self, *args: Any, **kwargs: Any) -> Sequence[Any]:
        return check_reward_values(self.__name__, await self.func(*args, **kwargs), kwargs.get("completions"))


def checked_reward_funcs(reward_funcs: Any) -> Any:
    """`reward_funcs` (one or a list, as TRL takes them) with every plain callable wrapped; the rest unchanged."""
    import torch
    from trl.trainer.utils import is_async_callable

    def wrap(func):
        if isinstance(func, (str, torch.nn.Module, CheckedReward)) or not callable(func):
            return func
        return AsyncCheckedReward(func) if is_async_callable(func) else CheckedReward(func)

    return [wrap(func) for func in reward_funcs] if isinstance(reward_funcs, list) else wrap(reward_funcs)
