"""Iterative on-policy preference training: generate pairs with the current model, train DPO on them, N rounds.

    python scripts/iterate.py --config recipes/smollm2-135m/iterative-dpo.yaml [--rounds 3 ...]
"""

from alignment.iterate_cli import iterate_main

if __name__ == "__main__":
    iterate_main()
