"""DoGE online (arXiv 2310.15393): per-domain gradients computed next to the training step, gathered, and handed to
the `doge` rule by the domain-reweighting callback.

Expected values are computed here independently: per-domain gradients by autograd on each domain's rows alone (from
the full logits), the DoGE update written out by hand on hand-built gradients, the training step compared with a run
whose weights are frozen (`static`).
"""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from alignment.commands import cli
from alignment.configs import AlignmentSFTConfig, PreferenceConfig
from alignment.testing import make_preference_trainer, preference_pairs, trainer_test_args
from alignment.trainers import PreferenceTrainer
from alignment.trainers.domain_gradients import DomainGradients
from alignment.trainers.domain_reweighting import OnlineDomainWeights
from alignment.trainers.sft import DomainSFTTrainer
from tests.test_domain_reweighting import ROOT, _group_rl_trainer, _launch, _sft_rows, dpo_argv, logged


def _sft_trainer(model_dir, tmp_path, dataset=None, **overrides):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = AlignmentSFTConfig(**trainer_test_args(tmp_path, max_length=64, **overrides))
    return DomainSFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                            train_dataset=dataset if dataset is not None else _sft_rows(),
                            processing_class=AutoTokenizer.from_pretrained(model_dir))


# ------------------------------------------------------------------------------------------ per-domain gradients
def test_sft_per_domain_gradients_equal_autograd_on_each_domains_rows(tiny_model_dir, tmp_path):
    trainer = _sft_trainer(tiny_model_dir, tmp_path, domain_reweighting="doge")
    model = trainer.model
    model.train()
    chosen = [name for name, _ in model.named_parameters() if name.startswith("model.layers.1.")]
    assert len(trainer.domain_weights.gradients.parameters) == len(chosen) > 0  # default: the last decoder block
    batches = [trainer.data_collator([trainer.train_dataset[i] for i in rows]) for rows in ([0, 1, 2, 3], [4, 5])]
    domain_batches = [batch["domain"].clone() for batch in batches]
    for batch in batches:  # two micro-batches of one optimizer step
        trainer.compute_loss(model, dict(batch))
    assert all(p.grad is None for p in model.parameters())  # the bookkeeping never writes .grad
    grads = trainer.domain_weights.gradients.step_end()

    # Independently: each domain's mean token NLL over its rows of both micro-batches, from the full logits.
    params = [p for name, p in model.named_parameters() if name in chosen]
    for domain in range(3):
        total, tokens = 0.0, 0
        for batch, domains in zip(batches, domain_batches):
            rows = domains == domain
            if not rows.any():
                continue
            logits = model(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows]).logits
            labels = batch["labels"][rows][:, 1:]
            logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1))
            mask = labels != -100
            total = total - logp.squeeze(-1)[mask].sum()
            tokens += int(mask.sum())
        expected = torch.cat([g.flatten() for g in torch.autograd.grad(total / tokens, params)])
        torch.testing.assert_close(grads[domain], expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(grads[0], grads[1], atol=1e-4)  # distinct domains, distinct gradients


def test_preference_per_domain_gradients_equal_autograd_on_each_domains_rows(tiny_model_dir, tmp_path):
    dataset = preference_pairs(8, domain=["a", "b"] * 4)
    trainer = make_preference_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, dataset,
                                      domain_reweighting="doge", domain_doge_params=r"lm_head|layers\.1\.mlp")
    model = trainer.model
    model.train()
    params = trainer.domain_weights.gradients.parameters
    assert len(params) == 4  # lm_head + gate/up/down of block 1
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])  # a, b, a, b
    trainer.compute_loss(model, dict(batch))
    grads = trainer.domain_weights.gradients.step_end()
    for domain in range(2):
        rows = [i for i in range(4) if i % 2 == domain]
        # The same loss on this domain's pairs alone (a fresh forward on a sub-batch): mean per-pair DPO loss.
        sub = trainer.data_collator([trainer.train_dataset[i] for i in rows])
        loss = trainer.compute_loss(model, dict(sub))
        expected = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
        torch.testing.assert_close(grads[domain], expected, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------ the update
def _doge_by_hand(weights, gram, lr, mu, dw_max=5.0):
    gram = torch.tensor(gram, dtype=torch.float64)
    alignment = gram.sum(1)  # targets = all training domains, self term included (the library default)
    scores = (lr * alignment / (gram.diagonal().sqrt().mean() + 1e-6)).clamp(0.0, lr * dw_max)
    unnormalised = torch.tensor(weights, dtype=torch.float64) * torch.exp(scores / mu)
    return unnormalised / unnormalised.sum()


def test_weights_move_toward_the_domain_whose_gradient_aligns_with_the_others():
    # Linear per-example losses l = <c_d, theta>: domain gradients c_0 = (1, 0), c_1 = (0, 1), c_2 = (1, 1) — domain 2
    # points along both others, 0 and 1 are orthogonal to each other.
    theta = torch.nn.Parameter(torch.zeros(2))
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    state = OnlineDomainWeights(["a", "b", "c"], torch.full((3,), 1 / 3), torch.full((3,), 1 / 3), rule="doge",
                                rule_kwargs={"mu": 0.5})
    state.gradients = DomainGradients([theta], 3)
    state.learning_rate = 0.1

    ids = torch.tensor([0, 1, 2, 2])
    losses = (directions[ids] * theta).sum(-1) * torch.tensor([1.0, 1.0, 2.0, 4.0])  # domain 2 mean: 3 * c_2
    state.gradients.record(ids, losses)
    state.record(ids, losses.detach())
    state.step_end()
    gram = [[1.0, 0.0, 3.0], [0.0, 1.0, 3.0], [3.0, 3.0, 18.0]]
    expected = _doge_by_hand([1 / 3] * 3, gram, lr=0.1, mu=0.5)
    torch.testing.assert_close(state.weights, expected, rtol=0, atol=1e-6)
    assert state.weights[2] > 1 / 3 > state.weights[0] == pytest.approx(float(state.weights[1]))

    # Step 2: domain 2 absent -> its previous gradient (3 * c_2) is reused; domain 1 now points against domain 0.
    ids = torch.tensor([0, 1])
    losses = (torch.tensor([[1.0, 0.0], [-1.0, 0.0]])[torch.arange(2)] * theta).sum(-1)
    state.gradients.record(ids, losses)
    state.step_end()
    gram2 = [[1.0, -1.0, 3.0], [-1.0, 1.0, -3.0], [3.0, -3.0, 18.0]]
    torch.testing.assert_close(state.weights, _doge_by_hand(expected.tolist(), gram2, lr=0.1, mu=0.5), rtol=0,
                               atol=1e-6)
    assert state.num_updates == 2
    torch.testing.assert_close(state.average_weights, (expected + state.weights) / 2)


def test_zero_learning_rate_keeps_the_weights():
    theta = torch.nn.Parameter(torch.zeros(2))
    state = OnlineDomainWeights(["a", "b"], torch.tensor([0.5, 0.5]), torch.tensor([0.3, 0.7]), rule="doge")
    state.gradients = DomainGradients([theta], 2)
    state.learning_rate = 0.0  # the first step of a linear warm-up
    state.gradients.record(torch.tensor([0, 1]), theta.sum() * torch.tensor([1.0, 2.0]))
    state.step_end()
    assert state.weights.tolist() == pytest.approx([0.3, 0.7]) and state.num_updates == 1


# ------------------------------------------------------------------------------------------ training gradient unchanged
@pytest.mark.parametrize("kind", ["sft", "preference"])
def test_training_step_is_unchanged_by_the_doge_bookkeeping(tiny_model_dir, tmp_path, kind):
    # Same initial weights, one optimizer step (2 micro-batches): DoGE only changes the weights *after* the step, so
    # the parameters must equal those of a run whose weights are frozen (`static`) at the same values.
    initial = {"a": 0.2, "b": 0.3, "c": 0.5} if kind == "sft" else {"a": 0.7, "b": 0.3}
    common = dict(domain_initial_weights=initial, max_steps=1, gradient_accumulation_steps=2,
                  per_device_train_batch_size=2)

    def run(rule, out):
        if kind == "sft":
            trainer = _sft_trainer(tiny_model_dir, out, domain_reweighting=rule, **common)
        else:
            trainer = make_preference_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, out,
                                              preference_pairs(8, domain=["a", "b"] * 4), domain_reweighting=rule,
                                              **common)
        trainer.train()
        return trainer

    doge, frozen = run("doge", tmp_path / "doge"), run("static", tmp_path / "static")
    moved = 0
    for (name, p), q in zip(doge.model.named_parameters(), frozen.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7, msg=name)
    for (name, p), q in zip(doge.model.named_parameters(), _initial_parameters(tiny_model_dir)):
        moved += int(not torch.equal(p.detach(), q))
    assert moved > 0  # the step did train
    assert not torch.allclose(doge.domain_weights.weights, frozen.domain_weights.weights)  # and DoGE did update


def _initial_parameters(model_dir):
    from transformers import AutoModelForCausalLM

    return [p.detach() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters()]


# ------------------------------------------------------------------------------------------ resume
def test_resume_restores_doge_weights_and_gradients(tiny_model_dir, tmp_path, crash_at_training_step):
    dataset = preference_pairs(8, domain=["a"] * 4 + ["b"] * 4)
    fields = dict(domain_reweighting="doge", domain_reweighting_kwargs={"mu": 0.05}, max_steps=8,
                  save_strategy="steps", save_steps=4, per_device_train_batch_size=2)
    full = make_preference_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path / "full", dataset,
                                   **fields)
    full.train()
    crash, restore = crash_at_training_step
    crash(PreferenceTrainer, 6)
    with pytest.raises(RuntimeError, match="power cut"):
        make_preference_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path / "crash", dataset,
                                **fields).train()
    restore()
    resumed = make_preference_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path / "crash",
                                      dataset, **fields)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.domain_weights.num_updates == 8  # restored (a fresh state would have 4)
    history = [torch.stack(t.domain_weights.history) for t in (full, resumed)]
    torch.testing.assert_close(history[1], history[0], rtol=0, atol=1e-6)
    assert not torch.allclose(history[0][-1], history[0][0])
    torch.testing.assert_close(resumed.domain_weights.gradients.last, full.domain_weights.gradients.last, rtol=1e-5,
                               atol=1e-8)


# ------------------------------------------------------------------------------------------ start-up errors
def test_group_rl_rejects_doge_at_start_up(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="per-domain gradients.*GroupRLTrainer"):
        _group_rl_trainer(tiny_model_dir, tmp_path, domain_reweighting="doge")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"domain_reweighting": "doge", "domain_doge_params": "no_such_param"}, "matches no trainable parameter"),
        ({"domain_reweighting": "static", "domain_doge_params": "lm_head"}, "uses none"),
        ({"domain_reweighting": "doge", "gradient_checkpointing": True,
          "gradient_checkpointing_kwargs": {"use_reentrant": True}}, "use_reentrant: false"),
        ({"domain_reweighting": "doge", "domain_reweighting_kwargs": {"grads": [[1.0]]}}, "computed during training"),
    ],
)
def test_bad_doge_config_fails_before_training(tiny_model_dir, tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        make_preference_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path,
                                preference_pairs(8, domain=["a", "b"] * 4), **overrides)


def test_bad_doge_fields_fail_when_the_config_is_built(tmp_path):
    with pytest.raises(ValueError, match="domain_doge_last_layers"):
        AlignmentSFTConfig(**trainer_test_args(tmp_path, domain_reweighting="doge", domain_doge_last_layers=0))
    with pytest.raises(ValueError, match="regular expression"):
        AlignmentSFTConfig(**trainer_test_args(tmp_path, domain_reweighting="doge", domain_doge_params="(("))


# ------------------------------------------------------------------------------------------ two processes
def test_two_ranks_sum_per_domain_gradients(tiny_model_dir, tmp_path):
    from tests.test_distributed import _free_port

    single_out, ddp_out = tmp_path / "single", tmp_path / "ddp"
    doge = ("--domain_reweighting", "doge", "--domain_reweighting_mode", "upsample",
            "--domain_reweighting_kwargs", '{"mu": 0.05}')
    single, _ = cli.dpo_main(dpo_argv(tiny_model_dir, single_out, *doge))  # 1 process x 4, in this process
    log = _launch([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(ROOT / "accelerate_configs/cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
                   str(ROOT / "scripts/run_dpo.py"), *dpo_argv(tiny_model_dir, ddp_out, *doge),
                   "--per_device_train_batch_size", "2"])
    assert "rank 1 of world size 2" in log

    entries = json.loads((ddp_out / "checkpoint-8" / "trainer_state.json").read_text())["log_history"]
    ddp = [{k: v for k, v in e.items() if k.startswith("domain_")} for e in entries if "loss" in e]
    one = logged(single, "domain_")
    assert len(ddp) == len(one) == 8
    for a, b in zip(one, ddp):
        # 2 x 2 examples: the counts add up to the global batch only when both ranks are summed
        assert sum(v for k, v in b.items() if k.startswith("domain_count/")) == 4
        for key, value in a.items():
            assert b[key] == pytest.approx(value, abs=1e-4), key
    weights = [e for e in one if any(k.startswith("domain_weight/") for k in e)]
    assert not math.isclose(weights[-1]["domain_weight/addition"], 0.5, abs_tol=1e-3)  # DoGE did move the weights
    # Both ranks saved the same gradients (the sum over ranks, not their own share).
    rank0 = torch.load(ddp_out / "checkpoint-8" / "domain_weights_0.pt", weights_only=True)
    rank1 = torch.load(ddp_out / "checkpoint-8" / "domain_weights_1.pt", weights_only=True)
    assert torch.equal(rank0["gradients"]["last"], rank1["gradients"]["last"])
    torch.testing.assert_close(rank0["gradients"]["last"], single.domain_weights.gradients.last, rtol=1e-3,
                               atol=1e-6)
