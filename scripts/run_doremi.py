"""Two-stage DoReMi (arXiv 2305.10429): reference model, DoReMi proxy, averaged domain weights as a mixture fragment.

    python scripts/run_doremi.py --config recipes/tiny/doremi.yaml --output_dir outputs/tiny-doremi
    python scripts/run_sft.py --config outputs/tiny-doremi/main_recipe.yaml   # the main run on the DoReMi mixture

Arguments the script does not know (e.g. `--model_name_or_path`, `--learning_rate`) go to both training runs.
"""

import sys

from alignment.commands.console import run_step

if __name__ == "__main__":
    sys.exit(run_step("doremi"))
