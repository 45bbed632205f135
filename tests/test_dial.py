"""DIAL (arXiv 2501.00911) domain-invariant reward models: the pure pieces (`alignment.reward_objectives.dial`) against
hand values and a transcription of the official critic code (the `da` package 0.0.2 that github.com/portal-cornell/dial
depends on: `wdgrl.py`), the critic component (`DomainCritic`), the trainer (target pairs' labels never read, the
loss by hand, eval = TRL's loss), checkpoint/resume, two processes, and a run through `alignment-reward`."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from alignment.reward_objectives import (
    REWARD_INVARIANCE,
    build_critic,
    critic_objective,
    dial,
    gradient_penalty,
    scored_embeddings,
    scored_positions,
    validate_reward_invariance,
    wasserstein_estimate,
)
from alignment.trainers.domain_critic import DOMAIN_CRITIC_FILE, DomainCritic
from tests.test_reward_invariance import _pairs  # pairs with a `domain` column
from tests.test_reward_invariance import _trainer as reward_trainer

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------- transcription of the official critic code

def _official_gradient_penalty(da_net, src_embed, tgt_embed, alpha):
    """da 0.0.2 `wdgrl.py::gradient_penalty`, verbatim except that `alpha` is passed in (it calls torch.rand)."""
    src_batch_size = src_embed.size(0)
    tgt_batch_size = tgt_embed.size(0)
    batch_size = src_batch_size + tgt_batch_size
    src_repeats = batch_size // src_batch_size + 1
    tgt_repeats = batch_size // tgt_batch_size + 1
    src_embed_rep = torch.cat([src_embed] * src_repeats, dim=0)[:batch_size]
    tgt_embed_rep = torch.cat([tgt_embed] * tgt_repeats, dim=0)[:batch_size]
    differences = tgt_embed_rep - src_embed_rep
    interpolates = src_embed_rep + alpha * differences
    interpolates = torch.cat([interpolates, src_embed_rep, tgt_embed_rep]).requires_grad_()
    preds = da_net(interpolates)
    gradients = torch.autograd.grad(outputs=preds, inputs=interpolates, grad_outputs=torch.ones_like(preds),
                                    retain_graph=True, create_graph=True, only_inputs=True)[0]
    gradient_norm = gradients.norm(2, dim=1)
    return ((gradient_norm - 1) ** 2).mean()


def _official_wdgrl_update(embed, domain_labels, optimizer, critic_iter, gp_da_lambda, net, alphas):
    """da 0.0.2 `wdgrl.py::wdgrl_update` for one embedding, verbatim except for the alphas."""
    unique_dl = domain_labels.unique(sorted=True)
    src_mask = domain_labels == unique_dl[0]
    tgt_mask = domain_labels == unique_dl[1]
    for _ in range(critic_iter):
        src_embed = embed[src_mask].detach()
        tgt_embed = embed[tgt_mask].detach()
        src_critic = net(src_embed)
        tgt_critic = net(tgt_embed)
        wd = src_critic.mean() - tgt_critic.mean()
        gp_loss = _official_gradient_penalty(net, src_embed, tgt_embed, alphas.pop(0))
        loss = -wd + gp_da_lambda * gp_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _official_wdgrl_loss(embed, domain_labels, net):
    """da 0.0.2 `wdgrl.py::wdgrl_loss` (one embedding), times `da_lambda` as `DABase.get_da_loss` returns it."""
    unique_dl = domain_labels.unique()
    pred = net(embed)
    return pred[domain_labels == unique_dl[0]].mean() - pred[domain_labels == unique_dl[1]].mean()


# ------------------------------------------------------------------------------------------ pure pieces by hand

def test_wasserstein_estimate_and_dial_by_hand():
    source = torch.tensor([[1.0], [3.0]])
    target = torch.tensor([[0.5], [0.5], [2.0]])
    assert wasserstein_estimate(source, target).item() == pytest.approx(2.0 - 1.0)
    loss = dial(critic_source=source, critic_target=target, target_domains=["t"], weight=0.25)
    assert loss.item() == pytest.approx(0.25 * 1.0)
    assert dial(critic_source=source, critic_target=target, target_domains=["t"], weight=0.0).item() == 0.0


def test_dial_gradient_pushes_source_critic_values_down_and_target_up():
    source = torch.tensor([[1.0], [3.0]], requires_grad=True)
    target = torch.tensor([[0.5], [2.0]], requires_grad=True)
    dial(critic_source=source, critic_target=target, target_domains=["t"], weight=0.1).backward()
    # d/d f(s_i) = weight / Ns > 0 (descent lowers source values), d/d f(t_j) = -weight / Nt
    assert torch.allclose(source.grad, torch.full((2, 1), 0.05))
    assert torch.allclose(target.grad, torch.full((2, 1), -0.05))


def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared():
    # f(z) = w.z + b: grad_z f = w everywhere, so GP = (||w|| - 1)^2 whatever the points and alphas.
    critic = nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[2.0, 0.0, 1.0]]))
    source, target = torch.randn(2, 3), torch.randn(5, 3)
    alpha = torch.rand(7, 1)
    assert gradient_penalty(critic, source, target, alpha=alpha).item() == pytest.approx((math.sqrt(5) - 1) ** 2,
                                                                                          abs=1e-6)
    loss, distance, penalty = critic_objective(critic, source, target, gradient_penalty_weight=3.0, alpha=alpha)
    expected_distance = (critic.weight @ (source.mean(0) - target.mean(0))).item()
    assert distance.item() == pytest.approx(expected_distance, abs=1e-6)
    assert loss.item() == pytest.approx(-expected_distance + 3.0 * (math.sqrt(5) - 1) ** 2, abs=1e-5)


def test_gradient_penalty_equals_the_official_code_on_an_mlp():
    torch.manual_seed(0)
    critic = build_critic(6, layers=(5, 4), activation="relu")
    source, target = torch.randn(3, 6), torch.randn(4, 6)  # unequal sizes: the tiling matters
    alpha = torch.rand(7, 1)
    ours = gradient_penalty(critic, source, target, alpha=alpha)
    official = _official_gradient_penalty(critic, source, target, alpha)
    assert ours.item() == pytest.approx(official.item(), abs=1e-6)
    assert ours.item() > 1e-3  # not trivially zero
    (g_ours,) = torch.autograd.grad(ours, critic[0].weight)
    (g_official,) = torch.autograd.grad(_official_gradient_penalty(critic, source, target, alpha), critic[0].weight)
    assert torch.allclose(g_ours, g_official, atol=1e-6)


def test_build_critic_layouts():
    linear = build_critic(8, layers=(256, 128))  # the released config: "gelu" is unknown to `da` -> no activation
    assert [type(m) for m in linear] == [nn.Linear, nn.Linear, nn.Linear]
    assert [(m.in_features, m.out_features) for m in linear] == [(8, 256), (256, 128), (128, 1)]
    relu = build_critic(8, layers=(4,), activation="relu")
    assert [type(m) for m in relu] == [nn.Linear, nn.ReLU, nn.Linear]
    assert build_critic(8, layers=()).__len__() == 1
    assert build_critic(8)(torch.zeros(5, 8)).shape == (5, 1)
    with pytest.raises(ValueError, match="critic_activation must be one of"):
        build_critic(8, activation="selu")


def test_scored_embeddings_are_what_the_reward_head_reads(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["a short one", "a much longer text with many more tokens in it", "mid length text"]
    for side in ("right", "left"):
        tokenizer.padding_side = side
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model(**batch, output_hidden_states=True)
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_token_id
        embeddings = scored_embeddings(out.hidden_states[-1], batch["input_ids"], pad)
        assert torch.allclose(model.score(embeddings), out.logits, atol=1e-5), side
    lengths = batch["attention_mask"].sum(-1)
    tokenizer.padding_side = "right"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    assert scored_positions(batch["input_ids"], tokenizer.pad_token_id).tolist() == (lengths - 1).tolist()


def test_registry_entry_and_value_checks():
    spec = REWARD_INVARIANCE.get("dial")
    assert spec.critic and not REWARD_INVARIANCE.get("vrex").critic
    assert spec.inputs == ("critic_source", "critic_target", "step") and spec.required_hparams == ("target_domains",)
    assert spec.hparams["weight"] == 0.01 and spec.hparams["critic_iterations"] == 3  # the released config
    validate_reward_invariance("dial", {"target_domains": ["ko"]})
    for bad, match in [({}, "needs the hyper-parameter"), ({"target_domains": "ko"}, "non-empty list"),
                       ({"target_domains": []}, "non-empty list"), ({"target_domains": ["a", "a"]}, "twice"),
                       ({"target_domains": ["a"], "weight": -1.0}, "weight"),
                       ({"target_domains": ["a"], "critic_iterations": 0}, "critic_iterations"),
                       ({"target_domains": ["a"], "critic_lr": 0}, "critic_lr"),
                       ({"target_domains": ["a"], "critic_layers": [8, 0]}, "critic_layers"),
                       ({"target_domains": ["a"], "critic_activation": "selu"}, "critic_activation"),
                       ({"target_domains": ["a"], "penalty_weight": 1.0}, "does not take")]:
        with pytest.raises(ValueError, match=match):
            validate_reward_invariance("dial", bad)


# ------------------------------------------------------------------------------------------ the critic component

def test_critic_updates_equal_the_official_wdgrl_update():
    torch.manual_seed(1)
    source, target = torch.randn(4, 6) + 1.0, torch.randn(6, 6)
    ours = DomainCritic(6, seed=3, critic_layers=(5,), critic_activation="relu", critic_iterations=3,
                        gradient_penalty=2.0, critic_lr=1e-2, critic_weight_decay=1e-3)
    net = build_critic(6, layers=(5,), activation="relu")
    net.load_state_dict(ours.net.state_dict())
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)  # `da.base.get_optimizer`
    generator = torch.Generator().manual_seed(0)
    generator.set_state(ours.generator.get_state())
    alphas = [torch.rand((10, 1), generator=generator) for _ in range(6)]
    embed = torch.cat([source, target])
    labels = torch.cat([torch.zeros(4), torch.ones(6)])
    for _ in range(2):  # two batches of 3 critic steps
        metrics = ours.update(source, target)
        _official_wdgrl_update(embed, labels, optimizer, 3, 2.0, net, alphas)
    for a, b in zip(ours.net.parameters(), net.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert set(metrics) == {"critic_distance", "critic_gradient_penalty"}
    # the domain loss DABase returns (da_lambda * wdgrl_loss) equals ours on the updated critic
    official = 0.01 * _official_wdgrl_loss(embed, labels, net)
    loss = dial(critic_source=ours.values(source), critic_target=ours.values(target), target_domains=["t"])
    assert loss.item() == pytest.approx(official.item(), abs=1e-6)


def test_critic_learns_to_separate_and_the_domain_loss_pulls_source_to_target():
    torch.manual_seed(0)
    source, target = torch.randn(32, 4) + torch.tensor([2.0, 0, 0, 0]), torch.randn(32, 4)
    # WGAN-GP's usual penalty weight 10 keeps the critic near 1-Lipschitz (with the released 1.0 it overshoots).
    critic = DomainCritic(4, seed=0, critic_layers=(16,), critic_activation="relu", critic_lr=1e-2,
                          critic_iterations=200, gradient_penalty=10.0)
    before = wasserstein_estimate(critic.values(source), critic.values(target)).item()
    critic.update(source, target)
    after = wasserstein_estimate(critic.values(source), critic.values(target)).item()
    assert abs(before) < 0.2 and after == pytest.approx(2.0, abs=0.3)  # W1 of a 2-unit shift of the mean
    # one gradient step of the domain loss on the source embeddings lowers the distance the critic measures
    moved = source.clone().requires_grad_()
    dial(critic_source=critic.values(moved), critic_target=critic.values(target), target_domains=["t"],
         weight=1.0).backward()
    assert critic.net[0].weight.grad.abs().sum() == 0  # the reward model's loss never trains the critic
    with torch.no_grad():
        stepped = moved - 5.0 * moved.grad
    assert wasserstein_estimate(critic.values(stepped), critic.values(target)) < after - 0.1


def test_critic_without_both_kinds_takes_no_step_and_checkpoint_round_trip(tmp_path):
    critic = DomainCritic(4, seed=0, critic_layers=(3,))
    weights = [p.clone() for p in critic.net.parameters()]
    assert critic.update(torch.randn(3, 4), torch.zeros(0, 4)) == {}
    assert critic.update(None, torch.randn(2, 4)) == {}
    assert all(torch.equal(a, b) for a, b in zip(weights, critic.net.parameters()))
    source, target = torch.randn(3, 4), torch.randn(2, 4)
    critic.update(source, target)
    torch.save(critic.state_dict(), tmp_path / "c.pt")
    resumed = DomainCritic(4, seed=99, critic_layers=(3,))
    resumed.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    critic.update(source, target)
    resumed.update(source, target)  # same Adam moments and the same interpolation draws
    assert all(torch.equal(a, b) for a, b in zip(critic.net.parameters(), resumed.net.parameters()))


# ----------------------------------------------------------------------------------------------- the trainer

def _trainer(tiny_model_dir, tmp_path, dataset, kwargs):
    return reward_trainer(tiny_model_dir, tmp_path, dataset, "dial", kwargs)


KW = {"target_domains": ["t"], "weight": 5.0, "critic_layers": [8], "critic_activation": "relu",
      "gradient_penalty": 0.0}


def test_loss_is_source_bradley_terry_plus_weight_times_critic_distance(tiny_model_dir, tmp_path):
    import torch.nn.functional as F

    trainer = _trainer(tiny_model_dir, tmp_path, _pairs(["s", "t", "s", "t", "s", "t"]), KW)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    with torch.no_grad():
        model.score.weight.mul_(100.0)  # rewards of order 1
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    ids = batch["domain_ids"]
    target = ids == trainer.domain_names.index("t")
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        chosen, rejected = out.logits.squeeze(-1).chunk(2)
        source_bt = -F.logsigmoid(chosen - rejected)[~target].mean()
        emb = scored_embeddings(out.hidden_states[-1], batch["input_ids"], model.config.pad_token_id)
        side = target.repeat(2)
        f = trainer.domain_critic.net  # after this batch's critic steps, as the loss uses it
        distance = f(emb[~side]).mean() - f(emb[side]).mean()
    assert abs(distance.item()) > 1e-4
    assert loss.item() == pytest.approx(source_bt.item() + 5.0 * distance.item(), abs=1e-5)
    metrics = trainer._metrics["train"]
    assert metrics["source_loss"][-1] == pytest.approx(source_bt.item(), abs=1e-5)
    assert metrics["target_pair_fraction"][-1] == pytest.approx(0.5)


def test_the_target_pairs_labels_are_never_read(tiny_model_dir, tmp_path):
    """Swapping chosen/rejected of the target pairs changes neither the loss nor any gradient (gradient penalty 0:
    the critic's objective is then invariant to the order of the target completions too)."""
    domains = ["s", "t", "s", "t", "s", "t"]
    data = _pairs(domains)
    swapped = data.map(lambda row: {"chosen": row["rejected"], "rejected": row["chosen"]} if row["domain"] == "t"
                       else {})
    results = []
    for name, dataset in (("a", data), ("b", swapped)):
        trainer = _trainer(tiny_model_dir, tmp_path / name, dataset, KW)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(results[0][1], results[1][1]))
    # ... whereas the source pairs' labels are read
    flipped = data.map(lambda row: {"chosen": row["rejected"], "rejected": row["chosen"]} if row["domain"] == "s"
                       else {})
    trainer = _trainer(tiny_model_dir, tmp_path / "c", flipped, KW)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, dict(next(iter(trainer.get_train_dataloader()))))
    assert abs(loss.item() - results[0][0].item()) > 1e-4


def test_eval_is_trl_loss_on_every_pair(tiny_model_dir, tmp_path):
    from trl import RewardTrainer

    trainer = _trainer(tiny_model_dir, tmp_path, _pairs(["s", "t", "s", "t", "s", "t"]), KW)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    ours = trainer.compute_loss(trainer.model, dict(batch))
    plain = {k: v for k, v in batch.items() if k != "domain_ids"}
    assert torch.equal(ours, RewardTrainer.compute_loss(trainer, trainer.model, plain))


def test_refusals_name_the_field(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"target_domains.*names \['x'\], not in the training data"):
        _trainer(tiny_model_dir, tmp_path, _pairs(["s", "t"] * 2), {"target_domains": ["x"]})
    with pytest.raises(ValueError, match="covers every training domain"):
        _trainer(tiny_model_dir, tmp_path, _pairs(["s", "t"] * 2), {"target_domains": ["s", "t"]})
    with pytest.raises(ValueError, match="needs a `domain` column"):
        _trainer(tiny_model_dir, tmp_path, _pairs(["s", "t"]).remove_columns("domain"), {"target_domains": ["t"]})


# ------------------------------------------------------------------------- runs through alignment-reward

def _run(tiny_model_dir, out, *extra):
    from alignment.commands import reward_cli

    return reward_cli.reward_main(["--config", str(ROOT / "recipes/tiny/reward-dial.yaml"),
                                   "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), *extra])


def test_two_step_run_logs_the_critic_and_saves_a_plain_reward_model(tiny_model_dir, tmp_path):
    trainer, results = _run(tiny_model_dir, tmp_path / "out")
    assert trainer.state.global_step == 2 and trainer.args.reward_invariance == "dial"
    logged = [e for e in trainer.state.log_history if "domain_loss" in e]
    assert len(logged) == 2 and all(math.isfinite(e["domain_loss"]) for e in logged)
    assert any("critic_distance" in e for e in logged)
    saved = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert set(saved["reward"]["pairwise_accuracy"]) == {"all", "addition", "comparison"}
    assert not (tmp_path / "out" / DOMAIN_CRITIC_FILE).exists()  # training state, not part of the reward model
    card = (tmp_path / "out" / "README.md").read_text()
    assert "- dial\n" in card and "Domain-invariance objective" in card and "2501.00911" in card


def test_resume_restores_the_critic(tiny_model_dir, tmp_path):
    common = ("--max_steps", "3", "--save_strategy", "steps", "--save_steps", "1", "--per_device_train_batch_size",
              "4")
    full, _ = _run(tiny_model_dir, tmp_path / "full", *common)
    assert (tmp_path / "full" / "checkpoint-2" / DOMAIN_CRITIC_FILE).is_file()
    part = tmp_path / "part"
    _run(tiny_model_dir, part, *common[:1], "2", *common[2:])
    resumed, _ = _run(tiny_model_dir, part, *common, "--resume_from_checkpoint", str(part / "checkpoint-2"))
    for a, b in zip(full.domain_critic.net.parameters(), resumed.domain_critic.net.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_two_processes_keep_one_critic(tiny_model_dir, tmp_path):
    from tests.launching import launch_cpu_2proc

    out = tmp_path / "ddp"
    proc = launch_cpu_2proc(ROOT / "scripts/run_reward.py", [
        "--config", str(ROOT / "recipes/tiny/reward-dial.yaml"), "--model_name_or_path", str(tiny_model_dir),
        "--output_dir", str(out), "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    stem = DOMAIN_CRITIC_FILE.removesuffix(".pt")
    rank0, rank1 = (torch.load(out / "checkpoint-2" / f"{stem}_{rank}.pt", weights_only=True) for rank in (0, 1))
    assert all(torch.equal(rank0["net"][key], rank1["net"][key]) for key in rank0["net"])
    assert not torch.equal(rank0["generator"], rank1["generator"])  # each process its own interpolation draws
    initial = DomainCritic(16, seed=42, critic_layers=(16, 8)).net.state_dict()
    assert any(not torch.equal(initial[key], rank0["net"][key]) for key in initial)  # it did train


def test_smollm2_recipe_parses_and_refuses_plain_pairs_naming_the_domain_column(tiny_model_dir, tmp_path):
    from trl import DatasetMixtureConfig, ModelConfig

    from alignment.commands import reward_cli
    from alignment.commands.script_utils import parse_recipe
    from alignment.configs import AlignmentRewardConfig, AlignmentScriptArguments

    recipe = str(ROOT / "recipes/smollm2-135m/reward-dial.yaml")
    _, training_args, _, _, _ = parse_recipe(
        (AlignmentScriptArguments, AlignmentRewardConfig, ModelConfig, DatasetMixtureConfig), ["--config", recipe])
    assert training_args.reward_invariance == "dial"
    assert training_args.reward_invariance_kwargs["target_domains"] == ["comparison", "counting", "reversal",
                                                                        "word_problem"]
    argv = ["--config", recipe, "--model_name_or_path", str(tiny_model_dir), "--dataset_name",
            str(ROOT / "examples/data/preference-standard"), "--output_dir", str(tmp_path / "o"), "--max_steps", "1",
            "--bf16", "false"]
    with pytest.raises(ValueError, match="needs a `domain` column"):
        reward_cli.reward_main(argv)
    assert not (tmp_path / "o" / "config.json").exists()  # refused before any training or save
