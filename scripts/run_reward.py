"""Bradley-Terry reward-model training (TRL's RewardTrainer) from a YAML recipe: step 1 of the MADPO pipeline.

    python scripts/run_reward.py --config recipes/smollm2-135m/reward.yaml [--task_label_noise 0.2 ...]
    accelerate launch --config_file accelerate_configs/ddp.yaml scripts/run_reward.py --config ...

Then score the pairs with `scripts/annotate_margins.py` and train `loss_type: madpo` on them.
"""

import sys

from alignment.commands.console import run_step

if __name__ == "__main__":
    sys.exit(run_step("reward"))
