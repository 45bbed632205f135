"""Console-script entry points (`alignment-dpo`, `alignment-sft`, `alignment-grpo`, `alignment-reward`,
`alignment-doremi`, `alignment-generate`, `alignment-iterate`, `alignment-plot`).

pip's generated wrapper runs ``sys.exit(entry())``; the mains return what they trained (trainer, results) for callers
in Python, and ``sys.exit`` of such a value prints it and exits with status 1. These entries return None (status 0);
an exception still exits non-zero with its traceback.
"""

from __future__ import annotations


def dpo() -> None:
    from .cli import dpo_main

    dpo_main()


def sft() -> None:
    from .cli import sft_main

    sft_main()


def grpo() -> None:
    from .cli import grpo_main

    grpo_main()


def reward() -> None:
    from .reward_cli import reward_main

    reward_main()


def doremi() -> None:
    from .doremi import run_doremi

    run_doremi()


def generate() -> None:
    from .generate_cli import generate_main

    generate_main()


def iterate() -> None:
    from .iterate_cli import iterate_main

    iterate_main()


def plot() -> None:
    from .plots import plot_main

    plot_main()
