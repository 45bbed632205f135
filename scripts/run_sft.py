"""Supervised fine-tuning (TRL's SFTTrainer) from a YAML recipe.

    python scripts/run_sft.py --config recipes/smollm2-135m/sft.yaml
"""

import sys

from alignment.commands.console import run_step

if __name__ == "__main__":
    sys.exit(run_step("sft"))
