"""The model and data every step benchmark runs on: a named checkpoint and arithmetic preference pairs."""

from __future__ import annotations

import os

from datasets import Dataset


def make_pairs(n: int, loss_columns: bool = True) -> Dataset:
    """Arithmetic word problems in chat format; chosen and rejected of different lengths; with `loss_columns`, the
    extra columns losses require (`margin`: madpo/rdpo, `empty_trace`: bvpo, `preference_prob`: irepo)."""
    names = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana"]
    items = ["apples", "oranges", "marbles", "stickers", "books", "coins"]
    rows = []
    for i in range(n):
        a, b, who, what = 3 + 7 * i % 41, 2 + 5 * i % 17, names[i % len(names)], items[i % len(items)]
        rows.append({
            "prompt": [{"role": "user", "content": f"{who} has {a} {what} and buys {b} more, then gives away {i % 5}."
                                                   f" How many {what} does {who} have now? Reply with the number."}],
            "chosen": [{"role": "assistant", "content": f"{who} has {a} + {b} - {i % 5} = {a + b - i % 5} {what}. "
                                                        f"The answer is {a + b - i % 5}."}],
            "rejected": [{"role": "assistant", "content": f"The answer is {a + b + i % 5 + 1}, because {who} now has "
                                                          f"more {what} than before and gave some more away."}],
        })
        if loss_columns:
            rows[-1].update({
                "margin": float((i % 7) - 2),
                "empty_trace": i % 2,  # bvpo: alternate trace / empty-trace pairs
                "preference_prob": 0.55 + 0.1 * (i % 5),  # irepo
            })
    return Dataset.from_list(rows)


def model_path(name: str, tmp: str) -> str:
    """`tiny`: a tiny random Llama saved under `tmp`; anything else: a path, Hub id or embedded alias."""
    if name == "tiny":
        from alignment.testing import save_tiny_model

        return save_tiny_model(os.path.join(tmp, "tiny"))
    from alignment.modeling.models import resolve_model_name_or_path

    return resolve_model_name_or_path(name)
