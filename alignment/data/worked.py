"""Preference pairs whose answers show the one-line calculation ("39 - 21 = 18") instead of the bare number.

Why: a 135M model cannot do 2-digit subtraction or multiplication "in its head", and it already answers arithmetic in
the form ``a op b = c``. Bare-number pairs are off-policy for it (both sides ≈ −12 nats) and train it to drop the
working; pairs in its own form keep the working and contrast only the result. Measured on the demo (docs/demo-results.md):
held-out accuracy 7.0% → 29.5% with worked answers vs 7.0% → 11-15% with bare answers, same recipe otherwise.

The final-answer checker scores the last number, so worked answers are scored exactly like bare ones. Domains without
an arithmetic expression (comparison, counting, reversal) keep their bare answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_ARITHMETIC = re.compile(r"^What is (\d+) ([+\-*]) (\d+)\?")

# Word-problem templates of `alignment.data.tasks` -> the expression that answers them.
_STORY_PATTERNS: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"has (\d+) \w+\. \w+ gives (\d+) of them"), lambda m: f"{m[1]} - {m[2]}"),
    (re.compile(r"has (\d+) \w+ and buys (\d+) more"), lambda m: f"{m[1]} + {m[2]}"),
    (re.compile(r"had (\d+) \w+ and lost (\d+) of them"), lambda m: f"{m[1]} - {m[2]}"),
    (re.compile(r"has (\d+) \w+ and \w+ has (\d+) \w+\. How many \w+ do they have together"),
     lambda m: f"{m[1]} + {m[2]}"),
    (re.compile(r"has (\d+) bags with (\d+) \w+ in each bag"), lambda m: f"{m[1]} * {m[2]}"),
    (re.compile(r"shares (\d+) \w+ equally among (\d+) friends"), lambda m: f"{m[1]} / {m[2]}"),
]


def calculation(question: str) -> str | None:
    """The expression a task's question asks for (``"39 - 21"``), or None if it has none."""
    match = _ARITHMETIC.match(question)
    if match:
        return f"{match[1]} {match[2]} {match[3]}"
    for pattern, expression in _STORY_PATTERNS:
        match = pattern.search(question)
        if match:
            return expression(match)
    return None


def worked(question: str, result: str) -> str:
    """``"<expression> = <result>"`` where the question has an expression, else the bare result."""
    expression = calculation(question)
    return result if expression is None else f"{expression} = {result}"


def with_worked_answers(row: dict) -> dict:
    """Map a `to_preference` row to one whose chosen and rejected answers show the calculation."""
    question = row["prompt"][-1]["content"]
    row = dict(row)
    for side in ("chosen", "rejected"):
        messages = [dict(message) for message in row[side]]
        messages[-1]["content"] = worked(question, messages[-1]["content"])
        row[side] = messages
    return row
