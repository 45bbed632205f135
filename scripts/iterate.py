"""Iterative on-policy preference training: generate pairs with the current model, train DPO on them, N rounds.

    python scripts/iterate.py --config recipes/smollm2-135m/iterative-dpo.yaml [--rounds 3 ...]
"""

import sys

from alignment.commands.console import run_step

if __name__ == "__main__":
    sys.exit(run_step("iterate"))
