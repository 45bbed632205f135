"""On-policy preference pairs: sample K completions per prompt, score them with rewards, write prompt/chosen/rejected.

    python scripts/generate_pairs.py --config recipes/smollm2-135m/generate-pairs.yaml [--num_samples 8 ...]
"""

from alignment.generate_cli import generate_main

if __name__ == "__main__":
    generate_main()
