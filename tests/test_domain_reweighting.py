"""Online domain reweighting in the trainers: sampler shares, upweighted losses, logged weights, resume, 2 ranks.

Expected values are computed here from first principles (binomial tolerances, the DoReMi update written out, plain
unweighted losses of single-domain sub-batches), never by calling the code under test a second way.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.commands import cli
from alignment.configs import AlignmentSFTConfig, PreferenceConfig
from alignment.testing import make_preference_trainer, perturb_parameters_, preference_pairs, trainer_test_args
from alignment.trainers import PreferenceTrainer
from alignment.trainers.domain_reweighting import STATE_NAME
from alignment.trainers.domain_sampler import DomainWeightedSampler
from alignment.trainers.sft import DomainSFTTrainer

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = '{"addition": 0.5, "comparison": 0.8}'
DOREMI = ("--domain_reweighting", "doremi", "--domain_reference_losses", REFERENCE,
          "--domain_reweighting_kwargs", '{"eta": 2.0}')


def dpo_argv(model_dir, output_dir, *extra):
    return ["--config", str(ROOT / "recipes/tiny/dpo.yaml"), "--model_name_or_path", str(model_dir),
            "--output_dir", str(output_dir), "--eval_after_training", "false", *extra]


def logged(trainer, prefix):
    return [{k: v for k, v in entry.items() if k.startswith(prefix)} for entry in trainer.state.log_history
            if any(k.startswith(prefix) for k in entry)]


# ------------------------------------------------------------------------------------------------ sampler
def test_sampler_draws_domains_at_the_configured_shares():
    # Unbalanced domains (50/30/20 rows) sampled at 0.2/0.3/0.5: the data proportions would be far off.
    domain_ids = [0] * 50 + [1] * 30 + [2] * 20
    shares = torch.tensor([0.2, 0.3, 0.5])
    sampler = DomainWeightedSampler(domain_ids, 3, lambda step: shares, draws_per_step=100, seed=7,
                                    num_samples=40_000)
    draws = torch.tensor(list(sampler))
    assert draws.numel() == 40_000
    counts = torch.bincount(torch.tensor(domain_ids)[draws], minlength=3).double()
    n = draws.numel()
    for k in range(3):
        sigma = math.sqrt(n * shares[k] * (1 - shares[k]))
        assert abs(counts[k] - n * shares[k]) < 4.5 * sigma, (k, counts.tolist())
    # Within a domain every row is drawn uniformly: domain 2's 20 rows, ~1000 draws each.
    rows = torch.bincount(draws[draws >= 80] - 80, minlength=20).double()
    expected = n * 0.5 / 20
    assert (rows - expected).abs().max() < 4.5 * math.sqrt(expected)


def test_sampler_follows_weight_changes_per_step_and_is_deterministic():
    domain_ids = [0] * 10 + [1] * 10
    # Step 0 draws only domain 0, every later step only domain 1.
    schedule = lambda step: torch.tensor([1.0, 0.0]) if step == 0 else torch.tensor([0.0, 1.0])  # noqa: E731
    sampler = DomainWeightedSampler(domain_ids, 2, schedule, draws_per_step=4, seed=3)
    draws = list(sampler)
    assert len(draws) == 20
    assert all(i < 10 for i in draws[:4]) and all(i >= 10 for i in draws[4:])
    assert list(sampler) == draws  # same seed and epoch -> same stream (every rank, and a resumed run)
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != draws and all(i >= 10 for i in second)  # epoch 1 starts at step 5: all domain 1


def test_sampler_epoch_length_is_whole_steps_and_bad_input_fails():
    assert len(DomainWeightedSampler([0, 1] * 5, 2, lambda s: torch.tensor([0.5, 0.5]), draws_per_step=4)) == 8
    with pytest.raises(ValueError, match="have examples"):
        DomainWeightedSampler([0, 0, 2], 3, lambda s: torch.tensor([1.0, 0, 0]), draws_per_step=1)
    sampler = DomainWeightedSampler([0, 1], 2, lambda s: torch.tensor([0.0, 0.0]), draws_per_step=2)
    with pytest.raises(ValueError, match="sum to"):
        list(sampler)


def test_sampler_weights_come_from_the_recorded_history_with_a_lag():
    # Weights after optimizer step s are history[s]; the sampler's step s draws with history[s - lag], which exists
    # before step s's batches are prefetched, and is restored with the checkpoint (so a resumed run draws the same).
    from alignment.trainers.domain_reweighting import OnlineDomainWeights

    state = OnlineDomainWeights(["a", "b"], torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))
    state.history += [torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64)]
    assert state.weights_for_step(0).tolist() == [1.0, 0.0] and state.weights_for_step(1).tolist() == [1.0, 0.0]
    assert state.weights_for_step(2).tolist() == [0.0, 1.0] and state.weights_for_step(3).tolist() == [0.5, 0.5]
    assert state.weights_for_step(9).tolist() == [0.5, 0.5]  # clamped to the newest
    restored = OnlineDomainWeights(["a", "b"], torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]))
    restored.load_state_dict(state.state_dict())
    streams = [list(DomainWeightedSampler([0, 0, 1, 1], 2, s.weights_for_step, draws_per_step=2, seed=1,
                                          num_samples=6)) for s in (state, restored)]
    assert streams[0] == streams[1] and len(streams[0]) == 6
    assert all(i < 2 for i in streams[0][:4]) and all(i >= 2 for i in streams[0][4:6])  # steps 0-1 `a`, step 2 `b`


# ------------------------------------------------------------------------------------------------ upweight
def _preference_trainer(tiny_model_dir, tmp_path, dataset, **overrides):
    return make_preference_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, dataset,
                                   **overrides)


def test_upweight_scales_each_preference_loss_by_its_domain_factor(tiny_model_dir, tmp_path):
    # 4 rows per domain (equal sizes), static weights 0.8/0.2 -> factors K*w = 1.6 and 0.4.
    dataset = preference_pairs(8, domain=["a", "b"] * 4)
    weighted = _preference_trainer(tiny_model_dir, tmp_path / "w", dataset, domain_reweighting="static",
                                   domain_initial_weights={"a": 0.8, "b": 0.2})
    plain = _preference_trainer(tiny_model_dir, tmp_path / "p", dataset)
    perturb_parameters_(weighted.model)
    perturb_parameters_(plain.model)  # same seed: the same policy in both trainers
    weighted.model.train()
    plain.model.train()
    rows = list(range(6))  # domains a, b, a, b, a, b

    def loss(trainer, indices):
        examples = [trainer.train_dataset[i] for i in indices]  # tokenized rows
        with torch.no_grad():
            return trainer.compute_loss(trainer.model, trainer.data_collator(examples)).item()

    mean_a = loss(plain, rows[0::2])  # unweighted mean over the three `a` rows
    mean_b = loss(plain, rows[1::2])
    assert mean_a != pytest.approx(mean_b)  # the policy is perturbed, so the domains' losses differ
    assert loss(weighted, rows[0::2]) == pytest.approx(1.6 * mean_a, rel=1e-5)
    expected_mixed = (1.6 * 3 * mean_a + 0.4 * 3 * mean_b) / 6
    assert loss(weighted, rows) == pytest.approx(expected_mixed, rel=1e-5)
    assert loss(plain, rows) == pytest.approx((mean_a + mean_b) / 2, rel=1e-5)
    weighted.model.eval()  # evaluation losses stay unweighted, comparable across runs
    assert loss(weighted, rows) == pytest.approx(loss(plain, rows), rel=1e-6)


def test_upweight_factor_is_share_over_data_share_for_unequal_domains(tiny_model_dir, tmp_path):
    # 6 rows of `a`, 2 of `b` (data shares 0.75/0.25); target 0.5/0.5 -> factors 0.5/0.75 = 2/3 and 0.5/0.25 = 2.
    dataset = preference_pairs(8, domain=["a"] * 6 + ["b"] * 2)
    trainer = _preference_trainer(tiny_model_dir, tmp_path, dataset, domain_reweighting="static")
    trainer.model.train()
    factors = trainer.domain_example_weights(torch.tensor([0, 1]))
    assert factors.tolist() == pytest.approx([2 / 3, 2.0])


def test_sft_upweight_scales_token_losses_by_domain_factor(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [{"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                          {"role": "assistant", "content": str(i + 1) * (1 + i % 3)}],
             "domain": "a" if i % 2 == 0 else "b"} for i in range(8)]
    dataset = Dataset.from_list(rows)

    def trainer(out, **extra):
        args = AlignmentSFTConfig(**trainer_test_args(out, max_length=64, **extra))
        t = DomainSFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                             train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
        t.model.train()
        return t

    weighted = trainer(tmp_path / "w", domain_reweighting="static", domain_initial_weights={"a": 0.25, "b": 0.75})
    plain = trainer(tmp_path / "p", domain_reweighting="static")  # uniform = data shares: factors all 1
    examples = [weighted.train_dataset[i] for i in range(4)]  # a, b, a, b

    def loss_and_tokens(t, subset):
        batch = t.data_collator(subset)
        tokens = (batch["labels"][:, 1:] != -100).sum().item()
        with torch.no_grad():
            return t.compute_loss(t.model, batch).item(), tokens

    loss_a, tokens_a = loss_and_tokens(plain, examples[0::2])
    loss_b, tokens_b = loss_and_tokens(plain, examples[1::2])
    # token-level NLL: sum over every token / number of tokens; domain factors 0.5 (a) and 1.5 (b)
    expected = (0.5 * loss_a * tokens_a + 1.5 * loss_b * tokens_b) / (tokens_a + tokens_b)
    assert loss_and_tokens(weighted, examples)[0] == pytest.approx(expected, rel=1e-5)
    plain_mixed = (loss_a * tokens_a + loss_b * tokens_b) / (tokens_a + tokens_b)
    assert loss_and_tokens(plain, examples)[0] == pytest.approx(plain_mixed, rel=1e-5)


# ------------------------------------------------------------------------------------------------ logging + rule
def test_doremi_weights_are_logged_every_step_and_follow_the_update(tiny_model_dir, tmp_path):
    trainer, _ = cli.dpo_main(dpo_argv(tiny_model_dir, tmp_path / "run", *DOREMI))
    weights = logged(trainer, "domain_weight/")
    losses = logged(trainer, "domain_loss/")
    assert len(weights) == trainer.state.global_step == 8
    names, reference, eta, eps = ["addition", "comparison"], torch.tensor([0.5, 0.8], dtype=torch.float64), 2.0, 1e-3
    previous = torch.tensor([0.5, 0.5], dtype=torch.float64)
    history = []
    for step_weights, step_losses in zip(weights, losses):
        # DoReMi: alpha' ∝ alpha * exp(eta * max(L - L_ref, 0)); alpha = (1 - eps) alpha' + eps / K
        excess = (torch.tensor([step_losses[f"domain_loss/{n}"] for n in names], dtype=torch.float64)
                  - reference).clamp(min=0)
        unnormalised = previous * torch.exp(eta * excess)
        expected = (1 - eps) * unnormalised / unnormalised.sum() + eps / 2
        actual = torch.tensor([step_weights[f"domain_weight/{n}"] for n in names], dtype=torch.float64)
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
        previous = actual
        history.append(actual)
    # The loss exceeds the reference only on `addition` (0.69 > 0.5, < 0.8), so its weight grows every step.
    assert all(b[0] > a[0] for a, b in zip(history, history[1:]))
    summary = json.loads((tmp_path / "run" / "domain_weights.json").read_text())
    average = torch.stack(history).mean(0)
    assert summary["average_weights"]["addition"] == pytest.approx(average[0].item(), abs=1e-5)
    assert summary["final_weights"]["addition"] == pytest.approx(history[-1][0].item(), abs=1e-6)


# ------------------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("mode", ["upsample", "upweight"])
def test_resume_restores_domain_weights_and_matches_the_uninterrupted_run(tiny_model_dir, tmp_path, mode,
                                                                          crash_at_training_step):
    extra = (*DOREMI, "--domain_reweighting_mode", mode)
    full_dir, crash_dir = tmp_path / "full", tmp_path / "crash"
    full, _ = cli.dpo_main(dpo_argv(tiny_model_dir, full_dir, *extra))
    saved4 = torch.load(full_dir / "checkpoint-4" / STATE_NAME, weights_only=True)
    assert saved4["weights"]["step"] == 4 and saved4["history"].shape == (5, 2)

    crash, restore = crash_at_training_step
    crash(cli.PreferenceTrainer, 6)
    with pytest.raises(RuntimeError, match="power cut"):
        cli.dpo_main(dpo_argv(tiny_model_dir, crash_dir, *extra))
    restore()
    resumed, _ = cli.dpo_main(dpo_argv(tiny_model_dir, crash_dir, *extra, "--resume_from_checkpoint", "true"))
    assert resumed.state.global_step == 8
    # Restored, not restarted: a fresh state would have 4 updates at the end, not 8.
    assert resumed.domain_weights.num_updates == 8
    torch.testing.assert_close(torch.stack(resumed.domain_weights.history), torch.stack(full.domain_weights.history),
                               rtol=0, atol=1e-6)
    assert not torch.allclose(full.domain_weights.history[-1], full.domain_weights.history[0])
    # Upsample: the sampler replays the epoch's first draws with the recorded weights, so the same rows are drawn.
    assert logged(resumed, "domain_count/")[-4:] == logged(full, "domain_count/")[-4:]
    full_params, resumed_params = load_file(full_dir / "model.safetensors"), load_file(crash_dir / "model.safetensors")
    for name in full_params:
        torch.testing.assert_close(resumed_params[name], full_params[name], rtol=0, atol=1e-6, msg=name)


def test_resumed_upsampling_draws_the_first_steps_with_the_recorded_weights(tiny_model_dir, tmp_path,
                                                                           crash_at_training_step):
    # Cooldown switches from ~uniform (T=100) to ~all-`a` (T=0.1 over sizes 6:2) after update 3, so the weights
    # after 3 and after 4 steps differ sharply. Step 5 (the first after resuming from checkpoint-4) must draw with
    # the weights it had in the uninterrupted run (after 3 updates, lag 1), not the newest restored ones.
    dataset = preference_pairs(8, domain=["a"] * 6 + ["b"] * 2)
    fields = dict(domain_reweighting="cooldown", domain_reweighting_mode="upsample", domain_temperature=100.0,
                  domain_reweighting_kwargs={"switch_step": 3, "high_temperature": 100.0, "low_temperature": 0.1},
                  max_steps=8, save_strategy="steps", save_steps=4)
    full = _preference_trainer(tiny_model_dir, tmp_path / "full", dataset, **fields)
    full.train()
    crash, restore = crash_at_training_step
    crash(PreferenceTrainer, 6)
    with pytest.raises(RuntimeError, match="power cut"):
        _preference_trainer(tiny_model_dir, tmp_path / "crash", dataset, **fields).train()
    restore()
    resumed = _preference_trainer(tiny_model_dir, tmp_path / "crash", dataset, **fields)
    resumed.train(resume_from_checkpoint=True)
    counts = [logged(t, "domain_count/") for t in (full, resumed)]
    assert counts[0][4]["domain_count/b"] > 0  # step 5 still drew the rare domain in the uninterrupted run
    assert counts[1][-4:] == counts[0][-4:]
    assert all(step["domain_count/b"] == 0 for step in counts[0][5:])  # then the low temperature took over


def test_resume_without_domain_state_fails_clearly(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cli.dpo_main(dpo_argv(tiny_model_dir, out, *DOREMI, "--max_steps", "4"))
    (out / "checkpoint-4" / STATE_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="domain-weight state"):
        cli.dpo_main(dpo_argv(tiny_model_dir, out, *DOREMI, "--max_steps", "8", "--resume_from_checkpoint", "true"))


# ------------------------------------------------------------------------------------------------ bad config
@pytest.mark.parametrize(
    ("overrides", "dataset_domains", "match"),
    [
        ({"domain_reweighting": "doremi", "domain_reference_losses": {"a": 1.0}}, None, "no `domain` column"),
        ({"domain_reweighting": "nope"}, ["a", "b"], "valid: .*doremi"),
        # DoGE runs online (tests/test_doge_online.py); a parameter selection matching nothing fails at start-up.
        ({"domain_reweighting": "doge", "domain_doge_params": "no_such_param"}, ["a", "b"], "matches no trainable"),
        ({"domain_reweighting": "doremi"}, ["a", "b"], "domain_reference_losses"),
        ({"domain_reweighting": "doremi", "domain_reference_losses": {"a": 1.0, "b": 1.0},
          "domain_reweighting_kwargs": {"etta": 1.0}}, ["a", "b"], "etta"),
        ({"domain_reweighting": "doremi", "domain_reference_losses": {"a": 1.0, "b": 1.0},
          "domain_reweighting_kwargs": {"eta": -1.0}}, ["a", "b"], "eta"),
        ({"domain_reweighting": "static", "domain_initial_weights": {"a": 1.0, "c": 1.0}}, ["a", "b"],
         r"missing \['b'\], unknown \['c'\]"),
        ({"domain_reweighting": "static", "domain_initial_weights": {"a": 1.0, "b": 1.0},
          "domain_temperature": 2.0}, ["a", "b"], "not both"),
        ({"domain_reweighting": "doremi", "domain_reference_model": "some/model"}, ["a", "b"], "SFT only"),
    ],
)
def test_bad_reweighting_config_fails_before_training(tiny_model_dir, tmp_path, overrides, dataset_domains, match):
    extra = {} if dataset_domains is None else {"domain": dataset_domains * 4}
    with pytest.raises(ValueError, match=match):
        _preference_trainer(tiny_model_dir, tmp_path, preference_pairs(8, **extra), **overrides)


def test_bad_mode_fails_when_the_config_is_built(tmp_path):
    with pytest.raises(ValueError, match="domain_reweighting_mode"):
        PreferenceConfig(**trainer_test_args(tmp_path, domain_reweighting="static",
                                             domain_reweighting_mode="resample"))


def test_temperature_initial_weights(tiny_model_dir, tmp_path):
    # sizes 6 and 2; T = 2: p ∝ sqrt(n) -> sqrt(6) / (sqrt(6) + sqrt(2))
    trainer = _preference_trainer(tiny_model_dir, tmp_path, preference_pairs(8, domain=["a"] * 6 + ["b"] * 2),
                                  domain_reweighting="static", domain_temperature=2.0)
    expected = math.sqrt(6) / (math.sqrt(6) + math.sqrt(2))
    assert trainer.domain_weights.weights.tolist() == pytest.approx([expected, 1 - expected])


# ------------------------------------------------------------------------------------------------ two processes
def _launch(cmd, cwd=ROOT):
    from tests.test_distributed import _env

    from tests.launching import run_launch

    proc = run_launch(cmd, cwd=cwd, env=_env(), timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return proc.stdout + proc.stderr


def test_two_ranks_gather_per_domain_losses(tiny_model_dir, tmp_path):
    from tests.test_distributed import _free_port

    single_out, ddp_out = tmp_path / "single", tmp_path / "ddp"
    upsample = (*DOREMI, "--domain_reweighting_mode", "upsample")
    cli.dpo_main(dpo_argv(tiny_model_dir, single_out, *upsample))  # 1 process x 4, in this process
    log = _launch([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(ROOT / "accelerate_configs/cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
                   str(ROOT / "scripts/run_dpo.py"), *dpo_argv(tiny_model_dir, ddp_out, *upsample),
                   "--per_device_train_batch_size", "2"])
    assert "rank 1 of world size 2" in log

    def history(out):
        entries = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())["log_history"]
        return [{k: v for k, v in e.items() if k.startswith("domain_")} for e in entries if "loss" in e]

    single, ddp = history(single_out), history(ddp_out)
    assert len(ddp) == len(single) == 8
    for one, two in zip(single, ddp):
        # 2 ranks x 2 examples: the per-domain counts add up to the global batch of 4 only if both ranks are gathered
        assert sum(v for k, v in two.items() if k.startswith("domain_count/")) == 4
        assert {k: v for k, v in two.items() if "count" in k} == {k: v for k, v in one.items() if "count" in k}
        for key, value in one.items():
            assert two[key] == pytest.approx(value, abs=1e-5), key
    # Each rank saved the same state (weights identical on every rank).
    rank0 = torch.load(ddp_out / "checkpoint-8" / "domain_weights_0.pt", weights_only=True)
    rank1 = torch.load(ddp_out / "checkpoint-8" / "domain_weights_1.pt", weights_only=True)
    assert torch.equal(rank0["history"], rank1["history"]) and rank0["weights"]["step"] == 8


# ------------------------------------------------------------------------------------------------ DoReMi (SFT)
def _sft_rows(n=8):
    from datasets import Dataset

    return Dataset.from_list([{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                            {"role": "assistant", "content": str(2 * i) * (1 + i % 2)}],
                               "domain": ["a", "b", "c"][i % 3]} for i in range(n)])


def test_sft_doremi_records_per_token_clipped_excess_against_the_reference(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.testing import save_tiny_model

    reference_dir = save_tiny_model(tmp_path / "reference", seed=5)
    args = AlignmentSFTConfig(**trainer_test_args(tmp_path, max_length=64, domain_reweighting="doremi",
                                                  domain_reference_model=reference_dir))
    trainer = DomainSFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                               train_dataset=_sft_rows(), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    trainer.model.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    domains = batch["domain"].clone()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, dict(batch))

    # Independently: token NLL of both models from their full logits, excess clipped per token, averaged per domain.
    reference = AutoModelForCausalLM.from_pretrained(reference_dir)

    def token_nll(model):
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        logp = torch.log_softmax(logits.double(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return -logp, (labels != -100).double()

    nll, mask = token_nll(trainer.model)
    nll_ref, _ = token_nll(reference)
    excess = (nll - nll_ref).clamp(min=0) * mask
    state = trainer.domain_weights
    for d in range(3):
        rows = domains == d
        assert state._counts[d].item() == mask[rows].sum().item()
        assert state._loss_sums[d].item() == pytest.approx(excess[rows].sum().item(), rel=1e-4)
    # Clipping per token differs from clipping the domain mean (the paper's definition, not the shortcut).
    per_domain_clip = [((nll - nll_ref) * mask)[domains == d].sum().clamp(min=0).item() for d in range(3)]
    assert any(abs(a - b) > 1e-3 for a, b in zip(per_domain_clip, state._loss_sums.tolist()))


def test_doremi_script_end_to_end_writes_a_mixture_fragment_that_loads(tiny_model_dir, tmp_path):
    import yaml

    from alignment.configs import ShareMixtureConfig
    from alignment.commands.doremi import run_doremi
    from alignment.mixtures import load_share_mixture, realized_shares

    out = tmp_path / "doremi"
    result = run_doremi(["--config", str(ROOT / "recipes/tiny/doremi.yaml"), "--output_dir", str(out),
                         "--model_name_or_path", tiny_model_dir, "--reference_max_steps", "3",
                         "--proxy_max_steps", "4", "--eta", "5"])
    summary = json.loads((out / "proxy" / "domain_weights.json").read_text())
    assert summary["rule"] == "doremi" and summary["num_updates"] == 4
    weights = result["domain_weights"]
    assert set(weights) == {"addition", "comparison", "reversal"}
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert weights != pytest.approx({k: 1 / 3 for k in weights}, abs=1e-3)  # the proxy moved them (eta 5)

    fragment = yaml.safe_load((out / "share_mixture.yaml").read_text())["share_mixture"]
    config = ShareMixtureConfig(**fragment)
    shares = {source.domains[0]: source.weight for source in config.datasets}
    assert shares == pytest.approx(weights, abs=1e-5)
    realized = realized_shares(load_share_mixture(config, fmt="sft")["train"])
    assert realized == pytest.approx(weights, abs=0.02)

    # The main recipe trains on that mixture.
    trainer, _ = cli.sft_main(["--config", str(out / "main_recipe.yaml"), "--model_name_or_path", tiny_model_dir,
                               "--max_steps", "1", "--eval_after_training", "false"])
    assert trainer.state.global_step == 1 and Path(trainer.args.output_dir) == out / "main"


# ------------------------------------------------------------------------------------------------ group RL
def _group_rl_trainer(tiny_model_dir, tmp_path, **overrides):
    from transformers import AutoTokenizer

    from alignment.configs import GroupRLConfig
    from alignment.data import load_task_suite
    from alignment.trainers.group_rl import GroupRLTrainer

    args = GroupRLConfig(**trainer_test_args(tmp_path, num_generations=2, max_completion_length=4,
                                             per_device_train_batch_size=4, **overrides))
    dataset = load_task_suite("train", "prompt_only", domains=["addition", "comparison"], limit_per_domain=4)
    return GroupRLTrainer(model=tiny_model_dir, args=args, train_dataset=dataset,
                          processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))


def test_group_rl_upweight_scales_advantages_and_records_negative_rewards(tiny_model_dir, tmp_path):
    trainer = _group_rl_trainer(tiny_model_dir, tmp_path, domain_reweighting="static",
                                domain_initial_weights={"addition": 0.8, "comparison": 0.2})
    trainer.model.train()
    inputs = [{"domain": d} for d in ("addition", "addition", "comparison", "comparison")]
    advantages = torch.tensor([1.0, -2.0, 1.0, -2.0])
    scaled = trainer._reweight_by_domain(inputs, torch.tensor([1.0, 0.0, 0.5, 0.0]), advantages)
    assert scaled.tolist() == pytest.approx([1.6, -3.2, 0.4, -0.8])  # K * w_d = 1.6 and 0.4
    state = trainer.domain_weights
    assert state._loss_sums.tolist() == pytest.approx([-1.0, -0.5]) and state._counts.tolist() == [2, 2]


def test_group_rl_rejects_upsampling(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="upweight"):
        _group_rl_trainer(tiny_model_dir, tmp_path, domain_reweighting="static", domain_reweighting_mode="upsample")


# ------------------------------------------------------------------------------------------------ Group DRO
def test_group_dro_recipe_moves_the_weights_by_the_official_update_on_the_logged_losses(tiny_model_dir, tmp_path):
    out = tmp_path / "group-dro"
    trainer, _ = cli.sft_main(["--config", str(ROOT / "recipes/tiny/group-dro.yaml"), "--model_name_or_path",
                               tiny_model_dir, "--output_dir", str(out), "--max_steps", "3",
                               "--eval_after_training", "false", "--domain_reweighting_kwargs", '{"step_size": 1.0}'])
    summary = json.loads((out / "domain_weights.json").read_text())
    assert summary["rule"] == "group_dro" and summary["num_updates"] == 3
    names = trainer.domain_weights.domain_names
    losses = [[entry[f"domain_loss/{name}"] for name in names] for entry in logged(trainer, "domain_loss/")]
    history = trainer.domain_weights.history
    assert len(losses) == 3 and len(history) == 4
    for before, step_losses, after in zip(history, losses, history[1:]):
        # kohpangwei/group_DRO loss.py: adv_probs * exp(step_size * group_loss), normalised (step_size 1 here)
        expected = before * torch.exp(torch.tensor(step_losses, dtype=torch.float64))
        torch.testing.assert_close(after, expected / expected.sum(), rtol=1e-5, atol=1e-6)
        worst = max(range(len(names)), key=lambda i: step_losses[i])
        assert after[worst] > before[worst]  # the highest-loss domain gains weight
