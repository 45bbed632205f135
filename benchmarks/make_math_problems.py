"""Write examples/data/math-problems/{train,test}.jsonl: small school-math problems with LaTeX solutions.

A user-style problem set for the on-policy end-to-end benchmark (`benchmarks/onpolicy_e2e.py`): prompts in chat
form asking for a boxed answer, gold answers in a `solution` column written as a person would (fractions in lowest
terms as `\\frac{a}{b}`, decimals, integers), checked by math-verify, a verifier written by no one here. Five kinds:
percent of a number, a fraction in lowest terms, a fraction as a decimal, a one-step linear equation, and
multiply-then-add. Train and test problems are drawn apart (no prompt in both). Deterministic (seed 0).

    python benchmarks/make_math_problems.py
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "examples" / "data" / "math-problems"
SUFFIX = " Put the final answer in \\boxed{}."


def problems(rng: random.Random):
    while True:
        kind = rng.randrange(5)
        if kind == 0:
            a, b = rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 80]), rng.choice([8, 12, 20, 40, 60, 80, 120, 200])
            yield f"What is {a}% of {b}?", str(a * b / 100).removesuffix(".0"), "percent"
        elif kind == 1:
            p, q, k = rng.randint(1, 9), rng.randint(2, 12), rng.randint(2, 6)
            if p >= q:
                continue
            g = math.gcd(p, q)
            yield f"Write {p * k}/{q * k} as a fraction in lowest terms.", f"\\frac{{{p // g}}}{{{q // g}}}", "fraction"
        elif kind == 2:
            q = rng.choice([2, 4, 5, 8, 10, 16, 20, 25, 40, 50])
            p = rng.randint(1, q - 1)
            if math.gcd(p, q) != 1:
                continue
            yield f"What is {p}/{q} as a decimal?", str(p / q), "decimal"
        elif kind == 3:
            a, x = rng.randint(1, 30), rng.randint(1, 30)
            yield f"Solve for x: x + {a} = {a + x}.", str(x), "equation"
        else:
            a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(1, 20)
            yield f"What is {a} \\times {b} + {c}?", str(a * b + c), "arithmetic"


PER_KIND = {"train": 40, "test": 20}


def main() -> None:
    rng = random.Random(0)
    seen, by_kind = set(), {}
    quota = sum(PER_KIND.values())
    for attempt, (question, solution, domain) in enumerate(problems(rng)):
        if attempt > 100_000:  # a kind with fewer distinct problems than its quota
            raise RuntimeError(f"Could not draw {quota} distinct problems of every kind: {({k: len(v) for k, v in by_kind.items()})}")
        if question in seen or len(by_kind.setdefault(domain, [])) == quota:
            continue
        seen.add(question)
        by_kind[domain].append({"prompt": [{"role": "user", "content": question + SUFFIX}], "solution": solution,
                                "domain": domain})
        if len(by_kind) == 5 and all(len(rows) == quota for rows in by_kind.values()):
            break
    splits = {"train": [], "test": []}
    for rows in by_kind.values():  # the first 40 of each kind train, the next 20 are held out
        splits["train"] += rows[:PER_KIND["train"]]
        splits["test"] += rows[PER_KIND["train"]:]
    OUT.mkdir(parents=True, exist_ok=True)
    for split, part in splits.items():
        (OUT / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        print(f"{split}: {len(part)} problems -> {OUT / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
