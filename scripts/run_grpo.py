"""Group-relative RL (GRPO and the `alignment.advantages` registry) from a YAML recipe.

    python scripts/run_grpo.py --config recipes/smollm2-135m/ngrpo.yaml [--advantage_estimator grpo ...]
    accelerate launch --config_file accelerate_configs/cpu_2proc.yaml scripts/run_grpo.py --config ...
"""

import sys

from alignment.commands.console import run_step

if __name__ == "__main__":
    sys.exit(run_step("grpo"))
