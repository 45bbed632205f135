"""Launched with 2 processes by tests/test_reward_weighting_trainer.py: one GroupRLTrainer step with gradient-based
reward weighting under DDP; each rank writes its weights and influences to `<out>/rank<r>.json`.

    accelerate launch --config_file accelerate_configs/cpu_2proc.yaml tests/scripts/two_process_reward_weighting.py \
        MODEL_DIR OUT_DIR
"""

import json
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.configs import GroupRLConfig
from alignment.data import load_task_suite
from alignment.testing import trainer_test_args
from alignment.trainers.group_rl import GroupRLTrainer


def text_of(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def distinct_chars(completions, **kwargs):
    return [float(len(set(text_of(c)))) for c in completions]


def digits(completions, **kwargs):
    return [float(sum(ch.isdigit() for ch in text_of(c))) for c in completions]


def main(model_dir: str, out_dir: str) -> None:
    prompts = load_task_suite("train", "prompt_only", domains=["addition"], limit_per_domain=8)
    args = trainer_test_args(out_dir, num_generations=4, max_completion_length=6, per_device_train_batch_size=2,
                             max_steps=1, learning_rate=1e-2, lr_scheduler_type="constant",
                             gradient_checkpointing=False, reward_weighting="gradient",
                             reward_weighting_kwargs={"regularization": 1e-3})
    trainer = GroupRLTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=[distinct_chars, digits],
                             args=GroupRLConfig(**args), train_dataset=prompts,
                             processing_class=AutoTokenizer.from_pretrained(model_dir))
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {"world_size": trainer.accelerator.num_processes, "weights": trainer.reward_weights.tolist(),
              "influence": trainer.reward_weighter.last_influence.tolist()}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:3])
