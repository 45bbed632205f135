"""`accuracy_reward`: exact match of the completion's final answer with the dataset's ``answer`` column."""

from __future__ import annotations

from ..data.answers import accuracy_reward as _accuracy_reward
from .registry import register_reward


@register_reward("accuracy_reward")
def accuracy(completions, answer, **kwargs) -> list[float]:
    """1.0 when the completion's final answer equals the ``answer`` column, else 0.0 (`alignment.data.answers`)."""
    return _accuracy_reward(completions, answer)
