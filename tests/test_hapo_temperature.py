"""HAPO's adaptive temperature sampling (`alignment.sampling.hapo_temperature`, `hapo_temperature_tau`).

T_t = T (1 + tau clip(h_hat_t, -1, 1)), h_hat_t the token entropy normalised with the previous rollout's statistics
(official code: `starriver030515/HAPO`, `vllm/v1/sample/sampler.py`). Expected values are computed by hand here.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.configs import GroupRLConfig
from alignment.data import load_task_suite
from alignment.policy_losses.hapo import (EntropyStatistics, apply_entropy_statistics, entropy_statistics,
                                          normalized_entropy)
from alignment.sampling import HAPOTemperatureProcessor, hapo_temperature, token_entropy
from alignment.testing import trainer_test_args
from alignment.trainers.adaptive_temperature import STATE_FILE
from alignment.trainers.group_rl import GroupRLTrainer

G = 4
EPS = 1e-6  # HAPO's std epsilon: (e - q) / (std + 1e-6)


def _stats(q=0.0, std=1.0 - EPS, pos=1.0, neg=1.0):
    return EntropyStatistics(*(torch.tensor(v) for v in (q, std, pos, neg)))


def _uniform_logits(ks, vocab=300):
    """Row i: uniform over its first ks[i] tokens (entropy ln k), the rest -inf."""
    logits = torch.full((len(ks), vocab), float("-inf"))
    for row, k in enumerate(ks):
        logits[row, :k] = 0.0
    return logits


# ------------------------------------------------------------------------------------------------ pure formula
def test_token_entropy_ignores_masked_tokens():
    assert torch.allclose(token_entropy(_uniform_logits([1, 2, 16])), torch.tensor([0.0, math.log(2), math.log(16)]))


def test_hand_computed_temperatures_both_signs_and_clip():
    # q = ln ln 4 and std + eps = 1: h = ln(ln k / ln 4) = ln(log_4 k) for a row uniform over k tokens.
    stats = _stats(q=math.log(math.log(4)))
    ks = [4, 16, 2, 256, 1]
    # h: 0, ln 2, -ln 2, ln 4 (> 1: clipped), ln(1e-8) - q (entropy 0 floored at 1e-8; < -1: clipped).
    h_hat = [0.0, math.log(2), -math.log(2), 1.0, -1.0]
    expected = torch.tensor([0.8 * (1 + 0.05 * h) for h in h_hat])  # 0.8, 0.827726, 0.772274, 0.84, 0.76
    got = hapo_temperature(_uniform_logits(ks), stats, temperature=0.8, tau=0.05)
    assert torch.allclose(got, expected, atol=1e-6)
    assert got[1] > 0.8 > got[2]  # high entropy hotter, low entropy colder
    # Released code's statistics (negative side divided by min(h) < 0): low entropy is sampled hotter too.
    compat = hapo_temperature(_uniform_logits(ks), _stats(q=math.log(math.log(4)), neg=-1.0), temperature=0.8,
                              tau=0.05)
    assert torch.allclose(compat, torch.tensor([0.8 * (1 + 0.05 * abs(h)) for h in h_hat]), atol=1e-6)


def test_tau_zero_and_no_statistics_give_T_exactly():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0))
    for stats, tau in [(_stats(), 0.0), (None, 0.05)]:
        assert torch.equal(hapo_temperature(logits, stats, temperature=0.7, tau=tau), torch.full((5,), 0.7))


def test_entropy_is_taken_after_the_base_temperature():
    # The statistics describe softmax(logits / T) (TRL's entropies): T_t(logits, T) = T * T_t(logits / T, 1).
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(1)) * 3
    stats = _stats(q=0.5, pos=0.7, neg=0.4)
    at_t = hapo_temperature(logits, stats, temperature=0.6, tau=0.3)
    assert torch.allclose(at_t, 0.6 * hapo_temperature(logits / 0.6, stats, temperature=1.0, tau=0.3), atol=1e-6)


def test_statistics_are_the_loss_side_normalisation():
    # Same batch as test_group_rl_trainer's hand values: log-entropies -2..2, pivot 0.8 -> q = 1.2, d = e - 1.2,
    # std = sqrt(mean d^2) = sqrt(3.44); h_hat = d / 0.8 above q, d / 3.2 below.
    entropy = torch.exp(torch.tensor([[-2.0, -1.0, 0.0, 1.0, 2.0, 5.0]]))
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    stats = entropy_statistics(entropy, mask, pivot=0.8)
    assert stats.q.item() == pytest.approx(1.2, abs=1e-6)
    assert stats.std.item() == pytest.approx(math.sqrt(3.44), abs=1e-6)
    assert stats.pos_scale.item() == pytest.approx((math.sqrt(3.44) + EPS) / 0.8, rel=1e-6)
    assert stats.neg_scale.item() == pytest.approx((math.sqrt(3.44) + EPS) / 3.2, rel=1e-6)
    assert torch.allclose(apply_entropy_statistics(entropy, stats)[:, :5], normalized_entropy(entropy, mask)[:, :5])
    # Next-step tokens: inside the range, and beyond the previous batch's max / min (clipped to +-1).
    new = torch.exp(torch.tensor([1.6, -0.4, 3.0, -5.0]))
    assert torch.allclose(apply_entropy_statistics(new, stats), torch.tensor([0.5, -0.5, 1.0, -1.0]), atol=1e-5)
    assert entropy_statistics(entropy, torch.zeros_like(mask)) is None


# ------------------------------------------------------------------------------------------------ in generate
def test_processor_with_transformers_warpers_samples_from_logits_over_T_t(tiny_model_dir):
    """transformers runs custom processors before its TemperatureLogitsWarper: the final scores are logits / T_t."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    temperature, tau = 0.7, 0.5
    stats = _stats(q=math.log(4.0), std=0.5, pos=0.8, neg=0.6)  # centred near the random model's entropies
    processor = HAPOTemperatureProcessor(stats, temperature=temperature, tau=tau)
    ids = tokenizer(["1 + 2 =", "7 * 3 ="], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(**ids, do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=4,
                         logits_processor=[processor], output_scores=True, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)
    assert len(out.scores) == len(processor.temperatures) > 0
    moved = 0.0
    for raw, final, t_t in zip(out.logits, out.scores, processor.temperatures):
        expected_t = hapo_temperature(raw, stats, temperature=temperature, tau=tau)
        assert torch.allclose(t_t, expected_t)
        want = torch.softmax(raw / expected_t.unsqueeze(1), dim=-1)
        assert torch.allclose(torch.softmax(final, dim=-1), want, atol=1e-6)
        moved = max(moved, (expected_t - temperature).abs().max().item())
    assert moved > 1e-3  # the check above is not the plain temperature


# ------------------------------------------------------------------------------------------------ trainer
@pytest.fixture(scope="module")
def prompts():
    return load_task_suite("train", "prompt_only", domains=["addition"], limit_per_domain=8)


def length_reward(completions, **kwargs):
    return [float(len(c[-1]["content"] if isinstance(c, list) else c) % 3) for c in completions]


def make_trainer(model_dir, tmp_path, dataset, **overrides):
    args = dict(num_generations=G, max_completion_length=6, per_device_train_batch_size=G, max_steps=2)
    args.update(overrides)
    config = GroupRLConfig(**trainer_test_args(tmp_path, **args))
    return GroupRLTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=[length_reward],
                          args=config, train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(model_dir))


def test_two_steps_first_at_T_second_adaptive_and_statistics_checkpointed(tiny_model_dir, tmp_path, prompts):
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, hapo_temperature_tau=0.05, temperature=0.9,
                           save_strategy="steps", save_steps=2)
    calls = []
    original = trainer._hapo_temperature.sampling

    def spy(t):  # the statistics each rollout starts from
        calls.append(trainer._hapo_temperature.stats)
        return original(t)

    trainer._hapo_temperature.sampling = spy
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "hapo/temperature_mean" in entry]
    assert len(logs) == 2
    assert calls[0] is None and calls[1] is not None  # step 1: no previous rollout
    assert logs[0]["hapo/temperature_mean"] == pytest.approx(0.9, abs=1e-7)
    second = logs[1]["hapo/temperature_mean"]
    assert second != pytest.approx(0.9, abs=1e-6) and 0.9 * 0.95 <= second <= 0.9 * 1.05
    assert "generate" not in vars(trainer.model)  # the wrapper is gone after each rollout
    saved = torch.load(os.path.join(tmp_path, "out", "checkpoint-2", STATE_FILE), weights_only=True)
    assert set(saved) == {"q", "std", "pos_scale", "neg_scale"}
    assert torch.equal(saved["q"], trainer._hapo_temperature.stats.q.cpu())
    # A resumed trainer restores them (its first rollout samples with the pre-checkpoint statistics).
    fresh = make_trainer(tiny_model_dir, tmp_path / "b", prompts, hapo_temperature_tau=0.05, temperature=0.9)
    assert fresh._hapo_temperature.stats is None
    fresh.process_states.load(fresh.args, os.path.join(tmp_path, "out", "checkpoint-2"))
    assert torch.equal(fresh._hapo_temperature.stats.std, saved["std"])


def test_pivot_and_sign_follow_the_hapo_policy_loss(tiny_model_dir, tmp_path, prompts):
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, hapo_temperature_tau=0.05, policy_loss="hapo",
                           policy_loss_kwargs={"entropy_pivot": 0.5, "compat_code": True}, max_steps=1)
    assert (trainer._hapo_temperature.pivot, trainer._hapo_temperature.compat_code) == (0.5, True)
    off = make_trainer(tiny_model_dir, tmp_path / "off", prompts, max_steps=1)
    assert off._hapo_temperature is None and STATE_FILE not in off.process_states


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hapo_temperature_tau": 1.0}, "hapo_temperature_tau` must be a number in \\[0, 1\\)"),
        ({"hapo_temperature_tau": -0.05}, "hapo_temperature_tau` must be"),
        ({"hapo_temperature_tau": 0.05, "temperature": 0.0}, "generation is greedy"),
        ({"hapo_temperature_tau": 0.05, "generation_kwargs": {"do_sample": False}}, "generation is greedy"),
        ({"hapo_temperature_tau": 0.05, "use_vllm": True}, "use_vllm"),
        ({"hapo_temperature_tau": 0.05, "use_transformers_continuous_batching": True}, "continuous_batching"),
    ],
)
def test_bad_settings_fail_at_start_up(tiny_model_dir, tmp_path, prompts, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(tiny_model_dir, tmp_path, prompts, **overrides)


def test_recipe_uses_the_official_tau():
    from pathlib import Path

    from trl import DatasetMixtureConfig, ModelConfig

    from alignment.commands.script_utils import parse_recipe
    from alignment.configs import AlignmentScriptArguments

    recipe = Path(__file__).resolve().parents[1] / "recipes/smollm2-135m/hapo.yaml"
    args = parse_recipe((AlignmentScriptArguments, GroupRLConfig, ModelConfig, DatasetMixtureConfig),
                        ["--config", str(recipe)])[1]
    assert (args.hapo_temperature_tau, args.temperature, args.policy_loss, args.advantage_estimator) == (
        0.05, 1.0, "hapo", "hapo")
    GroupRLTrainer._check_config(args)


def test_greedy_baseline_rollouts_are_left_alone(tiny_model_dir, tmp_path, prompts):
    # ReMax decodes one greedy completion per prompt through the same `_generate_single_turn`: no processor there.
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, hapo_temperature_tau=0.05, advantage_estimator="remax")
    sampled = []
    original = trainer._hapo_temperature.sampling
    trainer._hapo_temperature.sampling = lambda t: sampled.append(t.generation_config.do_sample) or original(t)
    trainer.train()
    assert sampled == [True, True]  # the two training rollouts only, not the two greedy ones
    assert len([e for e in trainer.state.log_history if "hapo/temperature_mean" in e]) == 2


def test_logged_temperature_matches_a_forward_pass_over_the_sampled_tokens(tiny_model_dir, tmp_path, prompts):
    """End to end: the mean T_t that `generate` used equals T (1 + tau mean h_hat), h_hat of the sampled completion
    tokens from a separate full forward, normalised with the *previous* rollout's statistics."""
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, hapo_temperature_tau=0.5, learning_rate=1e-8,
                           max_steps=3)
    component, expected = trainer._hapo_temperature, []
    update = component.update

    def checked_update(t, output):
        previous = component.stats
        if previous is not None:
            with torch.no_grad():
                _, entropies, _ = t._get_per_token_logps_and_entropies(
                    t.model, torch.cat([output["prompt_ids"], output["completion_ids"]], 1),
                    torch.cat([output["prompt_mask"], output["completion_mask"]], 1),
                    output["completion_ids"].size(1), batch_size=G, compute_entropy=True)
            mask = output["completion_mask"].bool()
            expected.append(1.0 + 0.5 * apply_entropy_statistics(entropies, previous)[mask].mean().item())
        update(t, output)

    component.update = checked_update
    trainer.train()
    logged = [e["hapo/temperature_mean"] for e in trainer.state.log_history if "hapo/temperature_mean" in e]
    assert logged[0] == 1.0 and len(expected) == 2
    assert logged[1:] == pytest.approx(expected, abs=1e-4)
    assert all(abs(value - 1.0) > 1e-3 for value in expected)


def test_two_processes_share_one_set_of_statistics(tiny_model_dir, tmp_path):
    """The statistics are over the completion tokens of both ranks (gathered), so both sample with the same ones."""
    import json
    from pathlib import Path

    from tests.launching import launch_cpu_2proc

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ddp"
    proc = launch_cpu_2proc(root / "scripts/run_grpo.py", [
        "--config", str(root / "recipes/tiny/grpo.yaml"), "--model_name_or_path", str(tiny_model_dir),
        "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2", "--logging_steps", "1",
        "--hapo_temperature_tau", "0.05", "--save_strategy", "steps", "--save_steps", "2"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    checkpoint = out / "checkpoint-2"
    rank0, rank1 = (torch.load(checkpoint / f"{STATE_FILE.removesuffix('.pt')}_{rank}.pt", weights_only=True)
                    for rank in (0, 1))
    assert set(rank0) == {"q", "std", "pos_scale", "neg_scale"}
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    logged = [e["hapo/temperature_mean"] for e in json.loads((checkpoint / "trainer_state.json").read_text())[
        "log_history"] if "hapo/temperature_mean" in e]
    assert logged[0] == 1.0 and logged[1] != pytest.approx(1.0, abs=1e-6)
