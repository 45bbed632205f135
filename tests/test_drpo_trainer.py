"""DRPO in GroupRLTrainer: the per-token gradient of the default setup equals the official `compute_policy_loss_drpo`.

The reference below is a transcription of Optimization-AI/DRPO `verl/verl/trainer/ppo/core_algos.py`
(`compute_policy_loss_drpo`, single process), not code from this toolkit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.configs import GroupRLConfig
from alignment.data import load_task_suite
from alignment.testing import perturb_parameters_, trainer_test_args
from alignment.trainers.group_rl import GroupRLTrainer

ROOT = Path(__file__).resolve().parents[1]
G, NUM_PROMPTS, MAX_LEN = 4, 4, 16
# Completion lengths 1..16, spread over the groups so every group mixes short and long answers.
LENGTHS = [[1, 5, 9, 16], [2, 6, 10, 14], [3, 7, 11, 15], [4, 8, 12, 13]]
# Three mixed groups (2, 3 and 1 wrong answers) and one all-wrong group, which DRPO drops but still counts in
# 1/#questions.
REWARDS = [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]


def official_drpo_loss(old_log_prob, log_prob, eos_mask, uid, seq_level_rewards, delta, beta, tau, Lambda,
                       kl_type="low_var_kl"):
    """`compute_policy_loss_drpo` of the official code, without the all-gather (one process)."""
    def masked_mean(values, mask):
        return (values * mask).sum() / mask.sum()

    negative_approx_kl = log_prob - old_log_prob
    ratio = torch.exp(negative_approx_kl)
    if kl_type == "low_var_kl":
        ppo_kl = masked_mean(-negative_approx_kl + ratio - 1, eos_mask)
    else:
        ppo_kl = masked_mean(-negative_approx_kl, eos_mask)
    global_scores = (log_prob * eos_mask).sum(dim=1) / eos_mask.sum(dim=1)
    global_length_ratio = eos_mask.sum(dim=1) / eos_mask.size(-1)
    sorted_uid, indices = uid.sort(stable=True)
    sorted_scores, sorted_rewards = global_scores[indices], seq_level_rewards[indices]
    sorted_length_ratio = global_length_ratio[indices]
    num_questions = uid.unique().numel()
    per_question = uid.size(0) // num_questions
    grouped_scores = sorted_scores.view(num_questions, per_question)
    grouped_rewards = sorted_rewards.view(num_questions, per_question)
    grouped_length_ratio = sorted_length_ratio.view(num_questions, per_question)
    pos_mask, neg_mask = grouped_rewards == 1, grouped_rewards == 0
    valid_mask = (pos_mask.sum(dim=1) != 0) & (neg_mask.sum(dim=1) != 0)
    grouped_scores, grouped_length_ratio = grouped_scores[valid_mask], grouped_length_ratio[valid_mask]
    pos_mask, neg_mask = pos_mask[valid_mask], neg_mask[valid_mask]
    neg_scores_masked = (grouped_scores / tau).masked_fill(~neg_mask, float("-inf"))
    neg_max, _ = neg_scores_masked.max(dim=-1, keepdim=True)
    neg_max = torch.where(neg_max == float("-inf"), torch.zeros_like(neg_max), neg_max)
    neg_exp = torch.exp(((grouped_scores / tau) - neg_max.detach()) * neg_mask) * neg_mask
    neg_sum_exp = neg_exp.sum(dim=-1, keepdim=True)
    neg_logmeanexp = neg_sum_exp / (neg_sum_exp.detach() + torch.finfo(neg_sum_exp.dtype).eps)
    weight = torch.exp((1 - grouped_length_ratio) / Lambda)
    pg_losses = (weight * (grouped_scores - tau * neg_logmeanexp) * pos_mask).sum(dim=1, keepdim=True) / (
        weight * pos_mask).sum(dim=1, keepdim=True)
    pg_loss = pg_losses.sum() / num_questions
    constraint = torch.maximum(beta * (ppo_kl - delta), torch.zeros_like(ppo_kl)).detach() * ppo_kl
    return -pg_loss + constraint


@pytest.fixture(scope="module")
def prompts():
    return load_task_suite("train", "prompt_only", domains=["addition"], limit_per_domain=NUM_PROMPTS)


def make_trainer(model_dir, tmp_path, dataset, reward_func, **overrides):
    args = dict(advantage_estimator="drpo", num_generations=G, max_completion_length=MAX_LEN,
                per_device_train_batch_size=G * NUM_PROMPTS, max_steps=1)
    args.update(overrides)
    return GroupRLTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=[reward_func],
                          args=GroupRLConfig(**trainer_test_args(tmp_path, **args)), train_dataset=dataset,
                          processing_class=AutoTokenizer.from_pretrained(model_dir))


@pytest.mark.parametrize("advantage_kwargs", [{}, {"tau": 0.05, "length_lambda": 0.3}], ids=["defaults", "small-tau"])
def test_per_token_gradient_matches_the_official_drpo_loss(tiny_model_dir, tmp_path, prompts, advantage_kwargs):
    generator = torch.Generator().manual_seed(0)
    token_ids = [[torch.randint(3, 200, (n,), generator=generator).tolist() for n in row] for row in LENGTHS]
    flat_ids = [ids for row in token_ids for ids in row]
    reward_of = {tuple(ids): r for ids, r in zip(flat_ids, [r for row in REWARDS for r in row], strict=True)}

    def table_reward(completion_ids, **kwargs):
        return [reward_of[tuple(ids)] for ids in completion_ids]

    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, table_reward, advantage_kwargs=advantage_kwargs)
    assert trainer.args.loss_type == "grpo"  # chosen for drpo because the recipe did not set it
    perturb_parameters_(trainer.model, scale=0.3)  # spread the completions' mean log-probs (the negatives' scores)
    tokenizer = trainer.processing_class
    generate = trainer._generate

    def fixed_completions(batch_prompts):
        prompt_ids, _, tool_mask, completions, logps, extra, images, tool_images = generate(batch_prompts)
        texts = [tokenizer.decode(ids) for ids in flat_ids]
        completions = [[{"role": "assistant", "content": t}] if isinstance(c, list) else t
                       for c, t in zip(completions, texts, strict=True)]
        return prompt_ids, [list(ids) for ids in flat_ids], tool_mask, completions, logps, extra, images, tool_images

    trainer._generate = fixed_completions
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions([row for row in prompts for _ in range(G)])
    mask = batch["completion_mask"].float()
    assert mask.sum(-1).tolist() == [float(n) for row in LENGTHS for n in row]
    assert mask.size(1) == MAX_LEN  # the official length ratio divides by the padded width

    captured = {}
    per_token_logps = trainer._get_per_token_logps_and_entropies

    def leaf_logps(*args, **kwargs):
        logps, *rest = per_token_logps(*args, **kwargs)
        captured["logps"] = logps.detach().requires_grad_(True)
        return (captured["logps"], *rest)

    trainer._get_per_token_logps_and_entropies = leaf_logps
    trainer._compute_loss(trainer.model, batch).backward()
    ours = captured["logps"].grad

    official_logps = captured["logps"].detach().clone().requires_grad_(True)
    hparams = {"tau": 10.0, "length_lambda": 0.1, **advantage_kwargs}  # the official script's defaults
    official_drpo_loss(official_logps.detach(), official_logps, mask, torch.arange(NUM_PROMPTS).repeat_interleave(G),
                       torch.tensor(REWARDS).view(-1), delta=1e-4, beta=1e3, tau=hparams["tau"],
                       Lambda=hparams["length_lambda"], kl_type="kl").backward()
    expected = official_logps.grad
    assert expected[:3].abs().sum() > 0 and expected[-G:].abs().sum() == 0  # mixed groups move, all-wrong does not
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-7)


def test_drpo_defaults_to_the_per_sequence_mean_and_rejects_other_aggregations(tmp_path):
    base = trainer_test_args(tmp_path, num_generations=2)
    assert GroupRLConfig(**base, advantage_estimator="drpo").loss_type == "grpo"
    assert GroupRLConfig(**base, advantage_estimator="drpo", loss_type="grpo").loss_type == "grpo"
    assert GroupRLConfig(**base).loss_type == "dapo"  # other estimators keep TRL's default
    assert GroupRLConfig(**base, advantage_estimator="grpo", loss_type="bnpo").loss_type == "bnpo"
    for loss_type in ("dapo", "dr_grpo", "bnpo"):
        with pytest.raises(ValueError, match=f"needs `loss_type: grpo`.*got `loss_type: {loss_type}`"):
            GroupRLConfig(**base, advantage_estimator="drpo", loss_type=loss_type)
    # A config changed after construction is caught by the trainer before training.
    args = GroupRLConfig(**base)
    args.advantage_estimator = "drpo"
    with pytest.raises(ValueError, match="needs `loss_type: grpo`"):
        GroupRLTrainer._check_config(args)


def test_drpo_recipe_follows_the_official_script():
    from trl import DatasetMixtureConfig, ModelConfig

    from alignment.configs import AlignmentScriptArguments
    from alignment.commands.script_utils import parse_recipe

    args = parse_recipe((AlignmentScriptArguments, GroupRLConfig, ModelConfig, DatasetMixtureConfig),
                        ["--config", str(ROOT / "recipes/smollm2-135m/drpo.yaml")])[1]
    assert (args.advantage_estimator, args.loss_type, args.beta) == ("drpo", "grpo", 0.0)
    assert args.advantage_kwargs == {"length_lambda": 0.1, "tau": 10.0}
    GroupRLTrainer._check_config(args)
