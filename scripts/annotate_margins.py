"""Annotate preference pairs with reward-model margins for `loss_type: madpo` (step 2 of the MADPO pipeline).

    python scripts/annotate_margins.py --reward_model outputs/smollm2-135m-reward \
        --dataset_name task-suite --task_domains addition subtraction multiplication word_problem \
        --test_limit_per_domain 50 --output_dir outputs/smollm2-135m-margins

Writes `<output_dir>/train.jsonl` and `test.jsonl` (every input column plus `margin` = r(prompt+chosen) −
r(prompt+rejected), `reward_chosen`, `reward_rejected`) and `annotation.json` (pairwise accuracy per split). A recipe
loads it with `dataset_name: <output_dir>`. `python scripts/annotate_margins.py --help` lists every option.
"""

import sys

from alignment.commands.console import run_step

if __name__ == "__main__":
    sys.exit(run_step("annotate-margins"))
