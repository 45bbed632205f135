"""On-policy preference pairs: sample K completions per prompt, score them with rewards, write prompt/chosen/rejected.

    python scripts/generate_pairs.py --config recipes/smollm2-135m/generate-pairs.yaml [--num_samples 8 ...]
"""

import sys

from alignment.commands.console import run_step

if __name__ == "__main__":
    sys.exit(run_step("generate"))
