"""Preference training (DPO and the `alignment.losses` registry) from a YAML recipe.

    python scripts/run_dpo.py --config recipes/smollm2-135m/dpo.yaml [--beta 0.05 ...]
    accelerate launch --config_file accelerate_configs/ddp.yaml scripts/run_dpo.py --config ...
"""

import sys

from alignment.commands.console import run_step

if __name__ == "__main__":
    sys.exit(run_step("dpo"))
