"""ReMax in GroupRLTrainer: one greedy rollout per prompt as the baseline, A_i = r(x, y_i) - r(x, greedy).

The greedy completions are decoded again here with `model.generate(do_sample=False)` on the untouched model and the
expected advantages are computed by hand from the recorded rewards.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.configs import GroupRLConfig
from alignment.data import load_task_suite
from alignment.testing import record_generated_advantages, trainer_test_args
from alignment.trainers.greedy_baseline import greedy_generation_kwargs
from alignment.trainers.group_rl import GroupRLTrainer

G = 4
MAX_NEW = 6


def text_of(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def char_reward(completions, **kwargs):
    """Deterministic, varied: number of distinct characters in the completion."""
    return [float(len(set(text_of(c)))) for c in completions]


@pytest.fixture(scope="module")
def prompts():
    return load_task_suite("train", "prompt_only", domains=["addition"], limit_per_domain=8)


def make_trainer(model_dir, tmp_path, dataset, funcs, **overrides):
    args = dict(num_generations=G, max_completion_length=MAX_NEW, per_device_train_batch_size=2 * G, max_steps=1,
                advantage_estimator="remax", temperature=1.5)
    args.update(overrides)
    return GroupRLTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=funcs,
                          args=GroupRLConfig(**trainer_test_args(tmp_path, **args)), train_dataset=dataset,
                          processing_class=AutoTokenizer.from_pretrained(model_dir))


def test_greedy_generation_kwargs_drop_sampling():
    sampling = {"max_new_tokens": 8, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 50, "min_p": None,
                "pad_token_id": 0, "eos_token_id": [2], "repetition_penalty": 1.1}
    greedy = greedy_generation_kwargs(sampling)
    assert greedy == {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0, "eos_token_id": [2],
                      "repetition_penalty": 1.1}


def test_remax_advantages_are_reward_minus_greedy_reward(tiny_model_dir, tmp_path, prompts):
    calls = []  # (prompts, completions, rewards) per reward call: the sampled batch, then the greedy rollouts

    def recorded(prompts, completions, **kwargs):
        rewards = char_reward(completions)
        calls.append(([text_of(p) for p in prompts], [text_of(c) for c in completions], rewards))
        return rewards

    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, [recorded])
    seen = record_generated_advantages(trainer, {})
    trainer.train()

    (sampled_prompts, _, sampled), (greedy_prompts, greedy_texts, greedy) = calls
    assert len(sampled) == 2 * G and len(greedy) == 2  # one greedy rollout per prompt, not per completion
    assert greedy_prompts == [sampled_prompts[0], sampled_prompts[G]]

    # The greedy completions are what argmax decoding of the untouched model gives.
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    by_text = {text_of(row["prompt"]): row["prompt"] for row in prompts}  # the sampler shuffles the rows
    for g, prompt_text in enumerate(greedy_prompts):
        ids = tokenizer.apply_chat_template(by_text[prompt_text], add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        out = model.generate(**ids, do_sample=False, max_new_tokens=MAX_NEW, pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, ids["input_ids"].size(1):], skip_special_tokens=True)
        assert greedy_texts[g] == expected

    rewards = torch.tensor(sampled).view(2, G)
    expected = (rewards - torch.tensor(greedy).unsqueeze(1)).view(-1)
    assert torch.allclose(seen["advantages"], expected, atol=1e-6)
    logs = trainer.state.log_history[0]
    assert logs["remax/baseline_reward"] == pytest.approx(sum(greedy) / 2)
    assert logs["advantages/mean"] == pytest.approx(expected.mean().item(), abs=1e-5)


def test_remax_refuses_generation_paths_without_greedy_rollout(tiny_model_dir, tmp_path, prompts):
    with pytest.raises(ValueError, match="greedy rollout per prompt"):
        make_trainer(tiny_model_dir, tmp_path, prompts, [char_reward], use_transformers_continuous_batching=True)
