"""GroupRLTrainer: registry advantages in TRL's GRPOTrainer, clipping variants, start-up checks, recipe, 2 processes.

Expected values are computed here by hand (or from TRL's own surrogate), never read back from the code under test.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOTrainer

from alignment.advantages import compute_advantages
from alignment.configs import GroupRLConfig
from alignment.data import load_task_suite
from alignment.testing import trainer_test_args
from alignment.trainers.group_rl import GroupRLTrainer
from alignment.policy_losses.clipped import clipped_surrogate
from alignment.policy_losses.hapo import adaptive_clip_bounds, normalized_entropy, redistribute_advantages

ROOT = Path(__file__).resolve().parents[1]
G = 4


def always_wrong(completions, **kwargs):
    return [0.0] * len(completions)


def length_reward(completions, **kwargs):
    """Deterministic, varied rewards (so groups are mixed): completion length in characters mod 3."""
    return [float(len(c[-1]["content"] if isinstance(c, list) else c) % 3) for c in completions]


@pytest.fixture(scope="module")
def prompts():
    return load_task_suite("train", "prompt_only", domains=["addition"], limit_per_domain=8)


def make_trainer(model_dir, tmp_path, dataset, funcs=None, **overrides):
    """`funcs`: reward callables; None resolves the config's `reward_funcs` names."""
    args = dict(num_generations=G, max_completion_length=6, per_device_train_batch_size=G, max_steps=1)
    args.update(overrides)
    config = GroupRLConfig(**trainer_test_args(tmp_path, **args))
    return GroupRLTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=funcs,
                          args=config, train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(model_dir))


def params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# ---------------------------------------------------------------------------------------------- pure surrogate
EPS_LOW, EPS_HIGH = 0.16, 0.24  # NGRPO's official script


def _surrogate_grad(ratio_values, advantage, by_sign=False):
    ratio = torch.tensor(ratio_values, requires_grad=True)
    loss = clipped_surrogate(ratio, torch.full_like(ratio, advantage), EPS_LOW, EPS_HIGH, by_sign)
    loss.sum().backward()
    return loss.detach(), ratio.grad


@pytest.mark.parametrize("by_sign", [False, True])
def test_upper_bound_binds_for_positive_advantages_only(by_sign):
    ratios = [0.5, 0.83, 1.0, 1.2, 1.3, 2.0]
    loss, grad = _surrogate_grad(ratios, 2.0, by_sign)
    # A > 0: loss = -A min(rho, 1.24); gradient -A below 1 + eps_high, 0 above it; no lower clip even at rho = 0.5.
    assert torch.allclose(loss, torch.tensor([-2 * min(r, 1 + EPS_HIGH) for r in ratios]))
    assert grad.tolist() == [-2.0, -2.0, -2.0, -2.0, 0.0, 0.0]


@pytest.mark.parametrize("by_sign", [False, True])
def test_lower_bound_binds_for_negative_advantages_only(by_sign):
    ratios = [0.5, 0.83, 0.85, 1.0, 1.3, 2.0]
    loss, grad = _surrogate_grad(ratios, -1.5, by_sign)
    # A < 0: loss = 1.5 max(rho, 0.84); gradient +1.5 above 1 - eps_low, 0 below; no upper clip even at rho = 2.
    assert torch.allclose(loss, torch.tensor([1.5 * max(r, 1 - EPS_LOW) for r in ratios]))
    assert grad.tolist() == [0.0, 0.0, 1.5, 1.5, 1.5, 1.5]


def test_symmetric_epsilon_would_clip_positive_side_earlier():
    # Guards the direction of the asymmetry: with eps_high = 0.24, rho = 1.22 still learns; with a symmetric 0.16 not.
    ratio = torch.tensor([1.22], requires_grad=True)
    clipped_surrogate(ratio, torch.ones(1), 0.16, 0.16).sum().backward()
    assert ratio.grad.item() == 0.0
    _, grad = _surrogate_grad([1.22], 1.0)
    assert grad.item() == -1.0


def test_normalized_entropy_hand_values_and_code_compat():
    # log-entropies -2..2: pivot 0.8 quantile = 1.2 (linear interpolation), d = e - 1.2; the std cancels in h/max(h)
    # and h/|min(h)|, so h_hat = d / 0.8 above the pivot and d / 3.2 below it.
    entropy = torch.exp(torch.tensor([[-2.0, -1.0, 0.0, 1.0, 2.0, 5.0]]))
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    expected = torch.tensor([[-1.0, -0.6875, -0.375, -0.0625, 1.0, 0.0]])
    assert torch.allclose(normalized_entropy(entropy, mask, pivot=0.8), expected, atol=1e-5)
    # Released code: the negative side is divided by min(h) < 0, so low-entropy tokens come out positive.
    compat = normalized_entropy(entropy, mask, pivot=0.8, compat_code=True)
    assert torch.allclose(compat, expected.abs(), atol=1e-5)


def test_adaptive_clip_widens_lower_bound_for_low_entropy_and_upper_for_high():
    h_hat = torch.tensor([-1.0, -0.375, 0.0, 0.5, 1.0])
    low, high = adaptive_clip_bounds(0.2, 0.28, h_hat, alpha=1.0)
    assert torch.allclose(low, torch.tensor([0.4, 0.275, 0.2, 0.2, 0.2]))
    assert torch.allclose(high, torch.tensor([0.28, 0.28, 0.28, 0.42, 0.56]))


def test_advantage_redistribution_hand_values():
    h_hat = torch.tensor([0.5, 0.5, -0.5, -0.5])
    ratio = torch.tensor([1.0, 1.5, 1.0, 1.5])  # neutral band (0.9, 1.1) for eps 0.2 / 0.2
    out = redistribute_advantages(torch.ones(4), h_hat, ratio, 0.2, 0.2, beta=1.0)
    # high entropy: A inside the band, A(1 + h) outside; low entropy: A(1 + h) inside, A outside.
    assert out.tolist() == [1.0, 1.5, 0.5, 1.0]


# ---------------------------------------------------------------------------------------------- trainer
def test_all_wrong_batch_moves_the_policy_under_ngrpo_but_not_grpo(tiny_model_dir, tmp_path, prompts):
    moved = {}
    for estimator in ("grpo", "ngrpo"):
        trainer = make_trainer(tiny_model_dir, tmp_path / estimator, prompts, [always_wrong],
                               advantage_estimator=estimator)
        before = params(trainer.model)
        trainer.train()
        after = params(trainer.model)
        moved[estimator] = max((after[n] - before[n]).abs().max().item() for n in before)
        logs = trainer.state.log_history[0]
        assert logs["frac_all_wrong_groups"] == 1.0
        if estimator == "ngrpo":
            # One virtual reward 1 joins G = 4 zeros: mean 1/5, unbiased std sqrt(0.8/4); every A = -0.2/sqrt(0.2).
            assert logs["advantages/mean"] == pytest.approx(-0.2 / math.sqrt(0.2), abs=1e-4)
            assert logs["grad_norm"] > 0
        else:
            assert logs["advantages/max"] == 0.0 and logs["advantages/min"] == 0.0
            assert logs["grad_norm"] == 0.0
    assert moved["grpo"] == 0.0
    assert moved["ngrpo"] > 0.0


@pytest.mark.parametrize("estimator, kwargs", [("rloo", {}), ("ngrpo", {"r_max": 2.0}), ("dr_grpo", {})])
def test_trainer_trains_with_the_registry_advantages(tiny_model_dir, tmp_path, prompts, estimator, kwargs):
    scored = []

    def recorded_reward(completions, **kw):
        rewards = length_reward(completions)
        scored.extend(rewards)
        return rewards

    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, [recorded_reward], advantage_estimator=estimator,
                           advantage_kwargs=kwargs, per_device_train_batch_size=2 * G)
    seen = {}
    generate, loss = trainer._generate_and_score_completions, trainer._compute_loss

    def recording_generate(inputs):
        output = generate(inputs)
        seen["generated"] = output["advantages"].detach().clone()  # group order, as the rewards
        return output

    def recording_loss(model, inputs):
        seen["trained"] = inputs["advantages"].detach().clone()  # TRL shuffles the batch before the loss
        return loss(model, inputs)

    trainer._generate_and_score_completions, trainer._compute_loss = recording_generate, recording_loss
    trainer.train()
    rewards = torch.tensor(scored)
    assert rewards.numel() == 2 * G
    expected = compute_advantages(estimator, rewards, G, **kwargs)
    assert rewards.view(-1, G).std(dim=1).max() > 0, "the test needs at least one mixed group"
    assert torch.allclose(seen["generated"], expected, atol=1e-5)
    assert torch.allclose(seen["trained"].sort().values, expected.sort().values, atol=1e-5)
    logs = trainer.state.log_history[0]
    assert logs["advantages/mean"] == pytest.approx(expected.mean().item(), abs=1e-5)
    assert logs["advantages/max"] == pytest.approx(expected.max().item(), abs=1e-5)
    # The completions table shows the advantages used, not TRL's own.
    assert list(trainer._logs["advantages"])[-2 * G:] == pytest.approx(expected.tolist(), abs=1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_sign_dependent_surrogate_path_matches_trl_loss(tiny_model_dir, tmp_path, prompts, loss_type):
    """Our surrogate path (policy_loss: sign_clipped) gives TRL's loss: the bounds are equivalent under the min."""
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, [length_reward], loss_type=loss_type, beta=0.05,
                           policy_loss="sign_clipped", epsilon=EPS_LOW, epsilon_high=EPS_HIGH,
                           advantage_estimator="rloo")
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions([prompts[0]] * G)
    generator = torch.Generator().manual_seed(0)
    shape = batch["completion_ids"].shape
    # Off-policy ratios spread over both clip bounds, and mixed-sign advantages.
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1), shape[1])
    batch["old_per_token_logps"] = logps + 0.4 * torch.randn(shape, generator=generator)
    batch["advantages"] = torch.tensor([1.0, -0.5, 2.0, -1.5])
    ours = trainer._compute_loss(trainer.model, batch)
    trl = GRPOTrainer._compute_loss(trainer, trainer.model, batch)
    assert torch.allclose(ours, trl, atol=1e-6)
    ours.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())


def test_clipped_policy_loss_matches_trl_loss(tiny_model_dir, tmp_path, prompts):
    """`policy_loss: clipped` is TRL's own surrogate, on our path: same loss on off-policy ratios."""
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, [length_reward], loss_type="dapo", beta=0.05,
                           policy_loss="clipped", epsilon=EPS_LOW, epsilon_high=EPS_HIGH, advantage_estimator="rloo")
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions([prompts[0]] * G)
    shape = batch["completion_ids"].shape
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1), shape[1])
    batch["old_per_token_logps"] = logps + 0.4 * torch.randn(shape, generator=torch.Generator().manual_seed(0))
    batch["advantages"] = torch.tensor([1.0, -0.5, 2.0, -1.5])
    assert torch.allclose(trainer._compute_loss(trainer.model, batch),
                          GRPOTrainer._compute_loss(trainer, trainer.model, batch), atol=1e-6)


def test_apa_policy_loss_trains_and_logs(tiny_model_dir, tmp_path, prompts):
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, [length_reward], loss_type="bnpo",
                           policy_loss="apa", policy_loss_kwargs={"lam": 0.5})
    before = params(trainer.model)
    trainer.train()
    logs = trainer.state.log_history[0]
    # One update per generation batch: the policy is still the sampling one, so the log-ratio is 0 at the loss.
    assert logs["apa/log_ratio_mean"] == pytest.approx(0.0, abs=1e-6)
    assert "clip_ratio/region_mean" not in logs
    after = params(trainer.model)
    assert max((after[n] - before[n]).abs().max().item() for n in before) > 0


def test_hapo_switches_train_and_log(tiny_model_dir, tmp_path, prompts):
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, [length_reward], loss_type="grpo",
                           policy_loss="hapo",
                           policy_loss_kwargs={"adaptive_clip": True, "advantage_redistribution": True},
                           advantage_estimator="hapo", max_steps=2)
    trainer.train()
    logs = trainer.state.log_history[0]
    assert -1.0 <= logs["hapo/h_hat_mean"] <= 1.0
    # Signed h: low-entropy tokens widen the lower bound, high-entropy ones the upper, never narrower than epsilon.
    assert logs["hapo/eps_low_mean"] >= 0.2 and logs["hapo/eps_high_mean"] >= 0.2
    assert logs["hapo/eps_low_mean"] > 0.2 or logs["hapo/eps_high_mean"] > 0.2


# ---------------------------------------------------------------------------------------------- start-up errors
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"advantage_estimator": "ppo"}, "Valid names"),
        ({"advantage_estimator": "remax", "use_transformers_continuous_batching": True}, "greedy rollout"),
        ({"reward_weighting": "pareto"}, "Valid names"),
        ({"reward_weighting": "gradient"}, "balances several rewards"),
        ({"reward_weighting_kwargs": {"layers": [0, 1]}}, "does not take"),
        ({"advantage_estimator": "ngrpo", "advantage_kwargs": {"beta": 1}}, "does not take"),
        ({"advantage_estimator": "ngrpo", "advantage_kwargs": {"eps": -1.0}}, "eps"),
        ({"scale_rewards": "none"}, "scale_rewards"),
        ({"multi_objective_aggregation": "normalize_then_sum"}, "multi_objective_aggregation"),
        ({"policy_loss": "hapo", "policy_loss_kwargs": {"advantage_redistribution": False}, "loss_type": "sapo"},
         "loss_type"),
        ({"policy_loss": "sign_clipped", "importance_sampling_level": "sequence"}, "importance_sampling_level"),
        ({"policy_loss": "hapo", "policy_loss_kwargs": {"adaptive_clip": False}, "entropy_coef": 0.01},
         "entropy_coef"),
        ({"policy_loss": "hapo", "policy_loss_kwargs": {"adaptive_clip": False, "advantage_redistribution": False,
                                                        "compat_code": True}}, "no HAPO switch"),
        # The removed flag fails at once and names itself (the pivot's value check: the case below).
        ({"hapo_adaptive_clip": True, "hapo_entropy_pivot": 1.5}, "hapo_entropy_pivot"),
        ({"policy_loss": "hapo", "policy_loss_kwargs": {"advantage_redistribution": False, "entropy_pivot": 1.5}},
         "entropy_pivot"),
        ({"policy_loss": "ppo"}, "Valid names"),
        ({"policy_loss": "hapo", "policy_loss_kwargs": {"pivot": 0.5}}, "does not take"),
        ({"policy_loss": "apa", "policy_loss_kwargs": {"lam": 0.0}}, "lam"),
        ({"policy_loss": "apa", "policy_loss_kwargs": {"reference": "init"}, "beta": 0.0}, "beta"),
        ({"policy_loss_kwargs": {"lam": 0.1}}, "`policy_loss` is not"),
        ({"advantage_estimator": "drpo", "loss_type": "dapo"}, "needs `loss_type: grpo`"),
        ({"reward_kwargs": {"format_reward": {}}}, "reward_kwargs"),
    ],
)
def test_bad_config_fails_at_start_up(tiny_model_dir, tmp_path, prompts, overrides, message):
    reward_funcs = None if "reward_kwargs" in overrides else [length_reward]  # None: names from the config
    with pytest.raises(ValueError, match=message):
        make_trainer(tiny_model_dir, tmp_path, prompts, reward_funcs, **overrides)


def test_dataset_without_answers_fails_at_start_up(tiny_model_dir, tmp_path, prompts):
    with pytest.raises(ValueError, match="`answer` column"):
        make_trainer(tiny_model_dir, tmp_path, prompts.remove_columns("answer"))  # default reward: accuracy_reward
    with pytest.raises(ValueError, match="`prompt` column"):
        make_trainer(tiny_model_dir, tmp_path, prompts.rename_column("prompt", "question"), [length_reward])


# ---------------------------------------------------------------------------------------------- recipe, launches
def _recipe_args(model_dir, output_dir, *extra) -> list[str]:
    return ["--config", str(ROOT / "recipes/tiny/grpo.yaml"), "--model_name_or_path", str(model_dir),
            "--output_dir", str(output_dir), *extra]


def test_recipe_runs_end_to_end(tiny_model_dir, tmp_path):
    from alignment.commands.cli import grpo_main

    out = tmp_path / "run"
    trainer, results = grpo_main(_recipe_args(tiny_model_dir, out, "--max_steps", "2",
                                              "--advantage_estimator", "ngrpo"))
    assert trainer.state.global_step == 2
    assert trainer.args.advantage_estimator == "ngrpo"
    assert "advantages/mean" in trainer.state.log_history[0]
    saved = json.loads((out / "eval_results.json").read_text())
    assert set(saved["after"]["accuracy"]) >= {"addition", "comparison"}
    assert (out / "model.safetensors").is_file() and (out / "recipe.yaml").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_launch(tiny_model_dir, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TQDM_DISABLE="1", WANDB_DISABLED="true")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "accelerate_configs/cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
           str(ROOT / "scripts/run_grpo.py"),
           *_recipe_args(tiny_model_dir, out, "--max_steps", "2", "--per_device_train_batch_size", "2",
                         "--advantage_estimator", "remax", "--logging_steps", "1")]
    from tests.launching import run_launch

    proc = run_launch(cmd, cwd=ROOT, env=env, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    for rank in (0, 1):
        assert f"[alignment] rank {rank} of world size 2" in log
    results = json.loads((out / "eval_results.json").read_text())
    assert results["world_size"] == 2
    # Rank 0 logs the statistics of the advantages computed from the rewards gathered over both ranks (a group of
    # G = 4 spans the two ranks, 2 completions each). ReMax's greedy rollout of that group runs on rank 0 only (rank 1
    # decodes a padding prompt whose reward is dropped), and both ranks get the same baseline.
    assert "'advantages/mean'" in log and "'frac_all_wrong_groups'" in log and "'remax/baseline_reward'" in log


GROUP_RL_RECIPES = ["smollm2-135m/grpo.yaml", "smollm2-135m/dr_grpo.yaml", "smollm2-135m/dapo.yaml",
                    "smollm2-135m/ngrpo.yaml", "smollm2-135m/grpo-vllm.yaml", "smollm2-135m/grpo-multiobjective.yaml",
                    "smollm2-135m/remax.yaml", "smollm2-135m/drpo.yaml", "smollm2-135m/apa.yaml",
                    "smollm2-135m/hapo.yaml", "tiny/grpo.yaml"]


@pytest.mark.parametrize("recipe", GROUP_RL_RECIPES)
def test_recipes_parse_and_pass_the_start_up_checks(recipe):
    from trl import DatasetMixtureConfig, ModelConfig

    from alignment.configs import AlignmentScriptArguments
    from alignment.commands.script_utils import parse_recipe
    from alignment.trainers.group_rl import resolve_reward_funcs
    from alignment.trainers.reward_weighting import check_reward_weighting_config

    _, args, _, _, _ = parse_recipe((AlignmentScriptArguments, GroupRLConfig, ModelConfig, DatasetMixtureConfig),
                                    ["--config", str(ROOT / "recipes" / recipe)])
    assert args.bf16 is False and args.gradient_checkpointing is False  # CPU defaults
    GroupRLTrainer._check_config(args)
    funcs = resolve_reward_funcs(args.reward_funcs, args.reward_kwargs)
    assert [f.__name__ for f in funcs] == args.reward_funcs
    check_reward_weighting_config(args, len(funcs))


def test_recipe_settings_follow_the_papers():
    from trl import DatasetMixtureConfig, ModelConfig

    from alignment.configs import AlignmentScriptArguments
    from alignment.commands.script_utils import parse_recipe

    def load(name):
        return parse_recipe((AlignmentScriptArguments, GroupRLConfig, ModelConfig, DatasetMixtureConfig),
                            ["--config", str(ROOT / "recipes/smollm2-135m" / name)])[1]

    ngrpo, dapo, dr = load("ngrpo.yaml"), load("dapo.yaml"), load("dr_grpo.yaml")
    assert (ngrpo.advantage_estimator, ngrpo.epsilon, ngrpo.epsilon_high) == ("ngrpo", 0.16, 0.24)
    assert (dapo.epsilon, dapo.epsilon_high, dapo.loss_type, dapo.mask_truncated_completions) == (0.2, 0.28, "dapo", True)
    assert (dr.advantage_estimator, dr.loss_type, dr.beta) == ("dr_grpo", "dr_grpo", 0.0)
    # Dynamic sampling: DAPO drops every zero-variance group, NGRPO's script only all-correct ones.
    assert (dapo.group_filter, ngrpo.group_filter) == ("zero_variance", "all_correct")


def test_unknown_reward_name_fails_at_start_up(tiny_model_dir, tmp_path, prompts):
    with pytest.raises(ValueError, match="Cannot resolve reward 'accuracy'"):
        make_trainer(tiny_model_dir, tmp_path, prompts, None, reward_funcs=["accuracy"])


# ---------------------------------------------------------------------------------------------- NaN rewards
def nan_reward(completions, **kwargs):
    return [float("nan")] * len(completions)  # e.g. a 0/0 in the user's scoring


def nan_for_some(completions, **kwargs):
    return [float("nan") if i % 2 else 1.0 for i in range(len(completions))]


def none_for_some(completions, **kwargs):
    return [None if i % 2 else 1.0 for i in range(len(completions))]  # "does not apply": TRL's documented skip


@pytest.mark.parametrize("funcs, name", [([nan_reward], "nan_reward"),
                                         ([length_reward, nan_for_some], "nan_for_some")])
def test_nan_reward_says_nan_and_names_the_function(tiny_model_dir, tmp_path, prompts, funcs, name):
    """A NaN score is an error that names the function and says NaN, not "returned None" (or, beside another
    reward, a silently dropped score)."""
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, funcs)
    with pytest.raises(ValueError, match=rf"Reward function '{name}' returned nan for completion \d+ .*Return None "
                                         "for completions this reward does not apply to"):
        trainer.train()


def test_none_beside_a_scored_reward_still_trains(tiny_model_dir, tmp_path, prompts):
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, [length_reward, none_for_some])
    trainer.train()
    assert trainer.state.global_step == 1


def test_reward_wrappers_keep_name_async_and_pickling():
    import asyncio
    import pickle

    from trl.trainer.utils import is_async_callable

    from alignment.rewards.checks import checked_reward_funcs
    from alignment.rewards import get_reward_function

    async def async_nan(completions, **kwargs):
        return [float("inf")] * len(completions)

    registry = get_reward_function("format_reward")
    wrapped_sync, wrapped_async, wrapped_registry = checked_reward_funcs([nan_for_some, async_nan, registry])
    assert wrapped_sync.__name__ == "nan_for_some" and wrapped_registry.__name__ == "format_reward"
    assert is_async_callable(wrapped_async) and not is_async_callable(wrapped_sync)
    with pytest.raises(ValueError, match=r"'async_nan' returned inf for completion 0 \('x'\)"):
        asyncio.run(wrapped_async(completions=["x"]))
    assert pickle.loads(pickle.dumps(wrapped_registry))(completions=["42"]) == registry(completions=["42"])
    model = torch.nn.Linear(1, 1)
    assert checked_reward_funcs([model, "org/reward-model"]) == [model, "org/reward-model"]
