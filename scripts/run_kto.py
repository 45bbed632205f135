"""Unpaired preference training (KTO and the `alignment.unpaired` registry) from a YAML recipe.

    python scripts/run_kto.py --config recipes/smollm2-135m/kto.yaml [--beta 0.05 ...]
    accelerate launch --config_file accelerate_configs/ddp.yaml scripts/run_kto.py --config ...
"""

import sys

from alignment.commands.console import run_step

if __name__ == "__main__":
    sys.exit(run_step("kto"))
