"""ReMax's greedy-rollout baseline for `GroupRLTrainer`: one greedy completion per prompt, scored by the run's rewards.

ReMax (Li et al., ICML 2024, arXiv 2310.10505) subtracts from each sampled completion's reward the reward of the
greedy completion of the same prompt, ``A_i = r(x, y_i) − r(x, ȳ)`` (`alignment.advantages.remax`). TRL's
GRPOTrainer only samples; this module adds the greedy rollout without touching TRL's sampling path.

Layout: TRL's generation batch holds ``num_groups`` prompts, each repeated ``G`` times, laid out group by group over
all processes (a group may span two processes). Group ``g`` is decoded by process ``g mod world_size``; every process
decodes the same number of prompts (the list is padded with a repeat of its last prompt and the padding is dropped
afterwards), because generation under ZeRO-3 and the rewards' all-gather need every process to take part equally.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import GenerationConfig
from trl.data_utils import is_conversational

# Generation settings kept from the sampling config; sampling ones (temperature, top-p/k, min-p) are dropped.
_KEPT_GENERATION_KEYS = ("max_new_tokens", "pad_token_id", "bos_token_id", "eos_token_id", "repetition_penalty",
                         "cache_implementation", "suppress_tokens")


def greedy_generation_kwargs(sampling_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The trainer's generation kwargs with sampling turned off (greedy decoding)."""
    kwargs = {key: sampling_kwargs[key] for key in _KEPT_GENERATION_KEYS if sampling_kwargs.get(key) is not None}
    kwargs["do_sample"] = False
    return kwargs


@contextlib.contextmanager
def _greedy_generation(trainer):
    # TRL passes both an explicit `generation_config` and `generation_kwargs` (which it writes into the model's own
    # generation config during the call); both must say greedy, or transformers would merge `do_sample=True` back in.
    saved = trainer.generation_config, trainer.generation_kwargs
    kwargs = greedy_generation_kwargs(trainer.generation_kwargs)
    trainer.generation_config = GenerationConfig(**kwargs, disable_compile=True)
    trainer.generation_kwargs = kwargs
    try:
        yield
    finally:
        trainer.generation_config, trainer.generation_kwargs = saved


def check_greedy_baseline_supported(trainer) -> None:
    """Fail at start-up for generation paths the greedy rollout does not cover."""
    unsupported = {
        "use_vllm": bool(getattr(trainer, "use_vllm", False)),
        "use_transformers_continuous_batching": bool(getattr(trainer, "use_transformers_continuous_batching", False)),
        "rollout_func": getattr(trainer, "rollout_func", None) is not None,
        "tools": bool(getattr(trainer, "tools", None)),
        "environment_factory": getattr(trainer, "environment_factories", None) is not None,
    }
    used = [name for name, on in unsupported.items() if on]
    if used:
        raise ValueError(f"advantage_estimator 'remax' needs one greedy rollout per prompt, which GroupRLTrainer runs "
                         f"with transformers' `generate` only; it does not support {used}. Turn them off or choose "
                         "another estimator (e.g. `rloo`).")


def greedy_baseline_rewards(trainer, inputs: list[dict[str, Any]], group_size: int) -> torch.Tensor:
    """Per-reward-function scores of one greedy completion per prompt of the generation batch.

    Args:
        trainer: the `GroupRLTrainer` (its tokenizer, generation path and reward functions are used).
        inputs: this process's rows of the generation batch (each prompt repeated ``group_size`` times overall).
        group_size: completions per prompt (``num_generations`` or ``num_generations_eval``).

    Returns:
        ``[num_groups, num_reward_funcs]`` rewards of the greedy completions, group order, identical on every process.
    """
    world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
    rows = gather_object(list(inputs)) if world > 1 else list(inputs)
    if len(rows) % group_size:
        raise RuntimeError(f"The generation batch has {len(rows)} rows, not a multiple of the group size {group_size}.")
    num_groups = len(rows) // group_size
    per_process = math.ceil(num_groups / world)
    mine = list(range(rank, num_groups, world))
    mine += [mine[-1] if mine else 0] * (per_process - len(mine))  # equal work everywhere; padding dropped below
    examples = [rows[g * group_size] for g in mine]
    prompts = [example["prompt"] for example in examples]

    was_training = trainer.model.training
    with _greedy_generation(trainer):
        prompt_ids, images, multimodal_fields = trainer._tokenize_prompts(prompts)
        completion_ids, _ = trainer._generate_single_turn(prompt_ids, images, multimodal_fields, 1)
    trainer.model.train(was_training)
    texts = trainer.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
    if is_conversational({"prompt": prompts[0]}):
        completions = [[{"role": "assistant", "content": text}] for text in texts]
    else:
        completions = texts
    # TRL's reward call (callables and reward models alike); it gathers over processes in rank order.
    scores = trainer._score_completions(examples, prompts, completions, completion_ids)
    scores = scores.view(world, per_process, -1)
    baseline = torch.empty(num_groups, scores.size(-1), device=scores.device, dtype=scores.dtype)
    for process in range(world):
        groups = list(range(process, num_groups, world))
        baseline[groups] = scores[process, :len(groups)]
    return baseline
