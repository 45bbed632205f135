"""`format_reward`: whether a completion states its answer in the expected final form (bare, boxed, marker)."""

from __future__ import annotations

import re

from ..data.answers import _NUMBER, _after_last_marker, _completion_text, _last_boxed, _strip_special_tokens
from .registry import register_reward

# "Just the final answer" as the task suite asks for it: one number or one word, optionally ending with a period.
_BARE_ANSWER_RE = re.compile(rf"(?:{_NUMBER}|[^\W\d_]+)\.?")
FORMAT_STYLES = ("bare", "boxed", "marker")


def has_final_answer_form(text: str, style: str = "bare") -> bool:
    """Whether ``text`` gives its answer in the expected final form.

    ``"bare"``: the whole reply is the answer, one number or one word (the task suite asks "Reply with just the final
    answer."); ``"boxed"``: it has a non-empty ``\\boxed{...}``; ``"marker"``: it states "the answer is X",
    "Answer: X" or "#### X". Chat control tokens and surrounding whitespace are ignored.
    """
    if style not in FORMAT_STYLES:
        raise ValueError(f"`style` must be one of {list(FORMAT_STYLES)}, got {style!r}.")
    text = _strip_special_tokens(text or "").strip()
    if style == "bare":
        return _BARE_ANSWER_RE.fullmatch(text) is not None
    if style == "boxed":
        boxed = _last_boxed(text)
        return boxed is not None and boxed.strip() != ""
    return _after_last_marker(text) is not None


@register_reward("format_reward")
def format_reward(completions, *, style: str = "bare", **kwargs) -> list[float]:
    """1.0 for each completion whose answer is in the expected final form (`has_final_answer_form`), else 0.0.

    ``style`` (default ``"bare"``, what the task suite's prompts ask for): ``"bare"``, ``"boxed"`` or ``"marker"``.
    It rewards the form only, not correctness: combine it with ``accuracy_reward`` with a small weight.
    """
    if style not in FORMAT_STYLES:
        raise ValueError(f"format_reward: `style` must be one of {list(FORMAT_STYLES)}, got {style!r}.")
    return [1.0 if has_final_answer_form(_completion_text(c), style) else 0.0 for c in completions]
