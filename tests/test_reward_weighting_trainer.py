"""Dynamic multi-objective reward weighting in GroupRLTrainer (Lu et al., arXiv 2509.11452).

(b) gradient-based: the per-objective policy gradients are recomputed here from the recorded batch with a fresh copy of
the model and plain autograd, and the new weights from the update rule by hand. (a) hypervolume: the meta-reward is
recomputed from the logged eval rewards with the 2-D hypervolume formula written out here.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.advantages import compute_advantages
from alignment.configs import GroupRLConfig
from alignment.data import load_task_suite
from alignment.testing import record_generated_advantages, trainer_test_args
from alignment.trainers.group_rl import GroupRLTrainer
from alignment.trainers.reward_weighting import STATE_NAME

G = 4
LR = 1e-2
REGULARIZATION = 1e-3  # lr / regularization = 10: one update moves the weights visibly without saturating


def text_of(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


def distinct_chars(completions, **kwargs):
    return [float(len(set(text_of(c)))) for c in completions]


def digits(completions, **kwargs):
    return [float(sum(ch.isdigit() for ch in text_of(c))) + 0.5 for c in completions]


def fewer_distinct_chars(completions, **kwargs):
    return [-r for r in distinct_chars(completions)]


def same_as_distinct_chars(completions, **kwargs):
    return distinct_chars(completions)


@pytest.fixture(scope="module")
def prompts():
    return load_task_suite("train", "prompt_only", domains=["addition"], limit_per_domain=8)


def make_trainer(model_dir, tmp_path, dataset, funcs, eval_dataset=None, **overrides):
    args = dict(num_generations=G, max_completion_length=6, per_device_train_batch_size=2 * G, max_steps=1,
                learning_rate=LR, lr_scheduler_type="constant", gradient_checkpointing=False)
    args.update(overrides)
    return GroupRLTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=funcs,
                          args=GroupRLConfig(**trainer_test_args(tmp_path, **args)), train_dataset=dataset,
                          eval_dataset=eval_dataset, processing_class=AutoTokenizer.from_pretrained(model_dir))


def record_gradient_probe(trainer) -> dict:
    seen = {}
    probe = trainer._objective_gradients

    def recording(output, advantages):
        gradients = probe(output, advantages)
        seen.update(output={k: v.detach().clone() for k, v in output.items() if isinstance(v, torch.Tensor)},
                    advantages=advantages.clone(), gradients=gradients.clone())
        return gradients

    trainer._objective_gradients = recording
    return record_generated_advantages(trainer, seen, key="used_advantages")


def test_gradient_weighting_matches_hand_computed_gradients_and_update(tiny_model_dir, tmp_path, prompts):
    scored = []

    def recorded_distinct(completions, **kwargs):
        rewards = distinct_chars(completions)
        scored.append(rewards)
        return rewards

    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, [recorded_distinct, digits],
                           reward_weighting="gradient", reward_weights=[0.75, 0.25],
                           reward_weighting_kwargs={"regularization": REGULARIZATION})
    seen = record_gradient_probe(trainer)
    trainer.train()

    # Per-objective advantages: the estimator on each reward alone.
    out = seen["output"]
    completions = trainer.processing_class.batch_decode(out["completion_ids"], skip_special_tokens=True)
    rewards = torch.tensor([distinct_chars(completions), digits(completions)]).T  # [N, 2]
    assert rewards[:, 0].tolist() == scored[0]
    expected_adv = torch.stack([compute_advantages("grpo", rewards[:, k], G) for k in range(2)], dim=1)
    assert torch.allclose(seen["advantages"], expected_adv, atol=1e-5)

    # Policy gradients by hand on the untouched model (every layer of the 2-layer model is selected by default).
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    params = [p for name, p in model.named_parameters() if ".layers." in name]
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    width = out["completion_ids"].size(1)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, -width - 1:-1]
    logps = logits.log_softmax(-1).gather(-1, out["completion_ids"].unsqueeze(-1)).squeeze(-1)
    mask = out["completion_mask"].float()
    expected_grads = []
    for k in range(2):
        loss = -(expected_adv[:, k:k + 1] * logps * mask).sum() / mask.sum()
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        expected_grads.append(torch.cat([g.reshape(-1) for g in grads]))
    expected_grads = torch.stack(expected_grads)
    assert torch.allclose(seen["gradients"], expected_grads, atol=1e-6, rtol=1e-4)

    # w <- softmax(log w + lr * s / lambda), s_k = sum_j <g_k, g_j>.
    dots = expected_grads.double() @ expected_grads.double().T
    influence = dots.sum(dim=1)
    logits_w = torch.log(torch.tensor([0.75, 0.25], dtype=torch.float64)) + LR * influence / REGULARIZATION
    expected_w = logits_w.exp() / logits_w.exp().sum()
    assert torch.allclose(trainer.reward_weights.double(), expected_w, atol=1e-6)
    assert not torch.allclose(expected_w, torch.tensor([0.75, 0.25], dtype=torch.float64), atol=1e-3)
    logs = trainer.state.log_history[0]
    assert logs["reward_weight/recorded_distinct"] == pytest.approx(expected_w[0].item(), abs=1e-6)
    assert logs["reward_influence/digits"] == pytest.approx(influence[1].item(), rel=1e-4)

    # The batch is scalarised with the NEW weights before its advantages are computed.
    scalar = rewards.double() @ expected_w
    assert torch.allclose(seen["used_advantages"].double(), compute_advantages("grpo", scalar, G), atol=1e-5)


def test_gradient_weighting_moves_weight_away_from_a_conflicting_objective(tiny_model_dir, tmp_path, prompts):
    # g_2 = g_1 and g_3 = -g_1 (GRPO advantages of -r are minus those of r): s = (|g|^2, |g|^2, -|g|^2).
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts,
                           [distinct_chars, same_as_distinct_chars, fewer_distinct_chars],
                           reward_weighting="gradient", reward_weighting_kwargs={"regularization": REGULARIZATION})
    trainer.train()
    w = trainer.reward_weights
    assert w[0] == pytest.approx(w[1].item(), abs=1e-6)
    assert w[0] > 1 / 3 > w[2]
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)


def _two_point_contribution(old, new):
    """2-D hypervolume (reference 0, maximised) gained by adding ``new`` to the front {old}."""
    return new[0] * new[1] - min(old[0], new[0]) * min(old[1], new[1])


def test_hypervolume_weighting_updates_after_each_evaluation(tiny_model_dir, tmp_path, prompts):
    trainer = make_trainer(tiny_model_dir, tmp_path, prompts, [distinct_chars, digits],
                           eval_dataset=prompts.select(range(2)), reward_weighting="hypervolume",
                           advantage_estimator="dr_grpo", reward_weighting_kwargs={"reference_point": [0.0, 0.0]},
                           eval_strategy="steps", eval_steps=1, max_steps=2, per_device_eval_batch_size=G)
    trainer.train()
    evals = [log for log in trainer.state.log_history if "eval_loss" in log]
    trains = [log for log in trainer.state.log_history if "loss" in log]
    assert len(evals) == 2 and len(trains) == 2
    v1 = [evals[0]["eval_rewards/distinct_chars/mean"], evals[0]["eval_rewards/digits/mean"]]
    v2 = [evals[1]["eval_rewards/distinct_chars/mean"], evals[1]["eval_rewards/digits/mean"]]
    m1 = 0.5 + 1.5 * math.tanh(v1[0] * v1[1])  # the first point's contribution is its own box
    m2 = 0.5 + 1.5 * math.tanh(max(_two_point_contribution(v1, v2), 0.0))
    assert evals[0]["eval_reward_weight/meta_reward"] == pytest.approx(m1, rel=1e-5)
    assert evals[1]["eval_reward_weight/meta_reward"] == pytest.approx(m2, rel=1e-5)
    # Training step 1 ran before any evaluation (m = 1); step 2 used m1 on both rewards.
    assert trains[0]["reward_weight/digits"] == pytest.approx(1.0)
    assert trains[1]["reward_weight/digits"] == pytest.approx(m1, rel=1e-5)
    assert trainer.reward_weights.tolist() == pytest.approx([m2, m2], rel=1e-5)


def test_reward_weighting_state_is_saved_and_restored(tiny_model_dir, tmp_path, prompts):
    trainer = make_trainer(tiny_model_dir, tmp_path / "a", prompts, [distinct_chars, digits],
                           reward_weighting="gradient", reward_weighting_kwargs={"regularization": REGULARIZATION},
                           save_strategy="steps", save_steps=1)
    trainer.train()
    checkpoint = tmp_path / "a" / "out" / "checkpoint-1"
    assert (checkpoint / STATE_NAME).is_file()
    resumed = make_trainer(tiny_model_dir, tmp_path / "b", prompts, [distinct_chars, digits],
                           reward_weighting="gradient", reward_weighting_kwargs={"regularization": REGULARIZATION})
    assert resumed.reward_weights.tolist() == pytest.approx([0.5, 0.5])
    resumed.create_optimizer_and_scheduler(num_training_steps=1)
    resumed._load_optimizer_and_scheduler(str(checkpoint))  # what `train(resume_from_checkpoint=...)` calls
    assert resumed.reward_weights.tolist() == pytest.approx(trainer.reward_weights.tolist(), abs=1e-7)
    assert resumed.reward_weights.tolist() != pytest.approx([0.5, 0.5], abs=1e-4)
    (checkpoint / STATE_NAME).unlink()  # e.g. saved by a run with `reward_weighting: fixed`
    with pytest.raises(FileNotFoundError, match="no reward-weighting state"):
        resumed._load_optimizer_and_scheduler(str(checkpoint))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"reward_weighting": "hypervolume", "eval_strategy": "steps", "eval_steps": 1}, "normalises"),
        ({"reward_weighting": "hypervolume", "advantage_estimator": "dr_grpo"}, "eval_strategy"),
        ({"reward_weighting": "gradient", "reward_weighting_kwargs": {"layers": [0, 5]}}, "goes past"),
        ({"reward_weighting": "gradient", "reward_weighting_kwargs": {"layers": [1]}}, r"\[first, last\]"),
        ({"reward_weighting": "gradient", "reward_weighting_kwargs": {"maximize": [True]}}, "does not take"),
    ],
)
def test_reward_weighting_bad_config_fails_at_start_up(tiny_model_dir, tmp_path, prompts, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(tiny_model_dir, tmp_path, prompts, [distinct_chars, digits],
                     eval_dataset=prompts.select(range(2)), **overrides)


def test_gradient_weighting_agrees_across_two_processes(tiny_model_dir, tmp_path):
    """Under DDP each rank takes gradients on its own completions and averages them before the update, so both ranks
    must hold the same weights (a group of G = 4 spans the two ranks here, 2 completions each)."""
    import json
    import os
    import socket
    import sys
    from pathlib import Path

    from tests.launching import run_launch

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(root / "accelerate_configs/cpu_2proc.yaml"), "--main_process_port", str(port),
           str(root / "tests/scripts/two_process_reward_weighting.py"), str(tiny_model_dir), str(tmp_path)]
    proc = run_launch(cmd, cwd=root, env=env, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["weights"] == pytest.approx(ranks[1]["weights"], abs=1e-9)
    assert ranks[0]["influence"] == pytest.approx(ranks[1]["influence"], abs=1e-9)
    assert max(abs(s) for s in ranks[0]["influence"]) > 0
    assert ranks[0]["weights"] != pytest.approx([0.5, 0.5], abs=1e-4)
