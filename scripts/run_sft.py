"""Supervised fine-tuning (TRL's SFTTrainer) from a YAML recipe.

    python scripts/run_sft.py --config recipes/smollm2-135m/sft.yaml
"""

from alignment.cli import sft_main

if __name__ == "__main__":
    sft_main()
