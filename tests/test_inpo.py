"""INPO (Zhang et al., ICLR 2025): the loss by hand, its minimiser and limits, the generator's π_t columns, the fixed
reference, and two on-policy rounds through `alignment-iterate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from alignment.losses import compute_preference_loss, validate_preference_loss
from alignment.testing import example_preference_batch

ROOT = Path(__file__).resolve().parents[1]
# example_preference_batch: Δ_π = [1.25, -2.0], Δ_ref = [-1.0, 0.0]; these round columns give Δ_t = [-0.5, -2.0].
ROUND = {"round_chosen_logps": torch.tensor([-1.5, -2.5]), "round_rejected_logps": torch.tensor([-1.0, -0.5])}


def test_values_by_hand():
    # eta = 0.5, tau = 0.1: tau/eta = 0.2, target 1/(2 eta) = 1.
    # h = Δ_π − 0.2 Δ_ref − 0.8 Δ_t = [1.25 + 0.2 + 0.4, −2.0 − 0 + 1.6] = [1.85, −0.4]
    losses, metrics = compute_preference_loss("inpo", example_preference_batch(**ROUND), eta=0.5, tau=0.1)
    assert losses.tolist() == pytest.approx([0.85 ** 2, 1.4 ** 2], abs=1e-6)
    assert metrics["inpo/h"].tolist() == pytest.approx([1.85, -0.4], abs=1e-6)
    assert metrics["inpo/round_logratio"].tolist() == pytest.approx([-0.5, -2.0])


def test_equals_the_papers_step_size_form():
    # Paper / methods sheet §10i with step size η_p: (Δ_π − η_p τ Δ_ref − (1 − η_p τ) Δ_t − η_p/2)²; the code's eta is 1/η_p.
    batch = example_preference_batch(**ROUND)
    eta_p, tau = 4.0, 0.05
    d_pi = batch.chosen_logps_sum - batch.rejected_logps_sum
    d_ref = batch.ref_chosen_logps_sum - batch.ref_rejected_logps_sum
    d_t = ROUND["round_chosen_logps"] - ROUND["round_rejected_logps"]
    paper = (d_pi - eta_p * tau * d_ref - (1 - eta_p * tau) * d_t - eta_p / 2) ** 2
    losses, _ = compute_preference_loss("inpo", batch, eta=1 / eta_p, tau=tau)
    torch.testing.assert_close(losses, paper)


def test_zero_exactly_at_the_target_and_gradient_signs():
    eta, tau = 0.25, 0.05
    target = 0.5 / eta
    ref_w, ref_l, t_w, t_l = torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-4.0]), torch.tensor([-1.0])
    mix = tau / eta * (ref_w - ref_l) + (1 - tau / eta) * (t_w - t_l)
    rejected = torch.tensor([-5.0])
    chosen = (rejected + mix + target).requires_grad_()  # log π(y_w)/π(y_l) exactly the target: the OMD step
    from alignment.losses import PreferenceBatch

    def loss_at(chosen_logp, rejected_logp):
        batch = PreferenceBatch.from_sequence_logps(chosen_logp, rejected_logp, ref_w, ref_l, round_chosen_logps=t_w,
                                                    round_rejected_logps=t_l)
        return compute_preference_loss("inpo", batch, eta=eta, tau=tau)[0]

    at_target = loss_at(chosen, rejected)
    assert at_target.item() == pytest.approx(0.0, abs=1e-10)
    at_target.sum().backward()
    assert chosen.grad.item() == pytest.approx(0.0, abs=1e-6)
    # Below the target: raise the chosen log-prob, lower the rejected one; above it: the opposite.
    for shift, sign in ((-1.0, -1.0), (1.0, 1.0)):
        w, l = (chosen.detach() + shift).requires_grad_(), rejected.clone().requires_grad_()
        loss_at(w, l).sum().backward()
        assert torch.sign(w.grad).item() == sign and torch.sign(l.grad).item() == -sign
        assert w.grad.item() == pytest.approx(2 * shift)  # d/dΔ_π (Δ_π − ...)² = 2·(offset)


def test_limits_tau_eta_is_ipo_toward_the_reference_and_tau_zero_toward_pi_t():
    from alignment.losses import PreferenceBatch

    def batch(round_w, round_l):  # one-token completions: TRL's length-normalised IPO is the sequence-level one here
        return PreferenceBatch.from_sequence_logps(torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -0.5]),
                                                   torch.tensor([-2.0, -1.0]), torch.tensor([-2.5, -1.5]),
                                                   round_chosen_logps=round_w, round_rejected_logps=round_l)

    eta = 0.2
    ipo, _ = compute_preference_loss("ipo", batch(torch.zeros(2), torch.zeros(2)), beta=eta)
    for round_w, round_l in ((torch.zeros(2), torch.zeros(2)), (torch.tensor([-7.0, 3.0]), torch.tensor([1.0, -2.0]))):
        inpo, _ = compute_preference_loss("inpo", batch(round_w, round_l), eta=eta, tau=eta)
        torch.testing.assert_close(inpo, ipo)  # τ = η: π_t drops out
    # τ = 0: regression toward π_t, the reference drops out: equal to IPO with π_t in the reference's place.
    round_w, round_l = torch.tensor([-7.0, 3.0]), torch.tensor([1.0, -2.0])
    toward_t = PreferenceBatch.from_sequence_logps(torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -0.5]), round_w,
                                                   round_l)
    inpo, _ = compute_preference_loss("inpo", batch(round_w, round_l), eta=eta, tau=0.0)
    torch.testing.assert_close(inpo, compute_preference_loss("ipo", toward_t, beta=eta)[0])


def test_round_columns_are_data_without_gradient():
    columns = {key: value.clone().requires_grad_() for key, value in ROUND.items()}
    batch = example_preference_batch(**columns)
    batch.chosen_logps.requires_grad_()
    losses, _ = compute_preference_loss("inpo", batch, eta=0.5, tau=0.1)
    losses.sum().backward()
    assert all(value.grad is None for value in columns.values()) and batch.chosen_logps.grad is not None


def test_validation_and_missing_columns():
    with pytest.raises(ValueError, match=r"`tau` must be in \[0, eta\]"):
        validate_preference_loss("inpo", eta=0.01, tau=0.02)
    with pytest.raises(ValueError, match="`eta` must be a number > 0"):
        validate_preference_loss("inpo", eta=0.0)
    with pytest.raises(ValueError, match="round_chosen_logps"):
        compute_preference_loss("inpo", example_preference_batch())
    # before training: the dataset check names the column and the option that writes it
    from alignment.testing import preference_pairs
    from alignment.trainers.validation import check_preference_dataset

    with pytest.raises(ValueError, match=r"no `round_chosen_logps` column.*`record_policy_logps: true`"):
        check_preference_dataset(preference_pairs(2), "train", ("round_chosen_logps", "round_rejected_logps"))


def test_generator_writes_the_sampling_policys_sequence_logps(tiny_model_dir, tmp_path):
    """`record_policy_logps` columns equal TRL's DPOTrainer's sequence sums under the same weights (its precomputed
    reference log-probs, the sampling model being the reference) and a direct teacher-forced sum."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl import DPOConfig, DPOTrainer

    from alignment.commands.generate_cli import generate_main

    (tmp_path / "verifier.py").write_text(
        "def shorter(prompts, completions, **kwargs):\n"
        "    return [-float(len(c if isinstance(c, str) else c[0]['content'])) for c in completions]\n")
    out = tmp_path / "pairs"
    common = ["--model_name_or_path", tiny_model_dir, "--num_samples", "3", "--max_new_tokens", "6",
              "--batch_size", "4", "--reward_funcs", str(tmp_path / "verifier.py") + ":shorter"]
    generate_main([*common, "--dataset_name", str(ROOT / "examples/data/prompts-standard"), "--output_dir", str(out),
                   "--record_policy_logps", "true"])
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert rows and all(row["round_chosen_logps"] < 0 and row["round_rejected_logps"] < 0 for row in rows)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # direct: Σ log softmax over the completion tokens of prompt + completion + EOS (TRL's text layout)
    row = rows[0]
    prompt_ids = tokenizer(row["prompt"])["input_ids"]
    ids = tokenizer(row["prompt"] + row["chosen"] + tokenizer.eos_token)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logps = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
    direct = logps[torch.arange(len(ids) - 1), torch.tensor(ids[1:])][len(prompt_ids) - 1 :].sum().item()
    assert row["round_chosen_logps"] == pytest.approx(direct, abs=1e-4)

    # the trainer's sums: TRL precomputes the reference's (= the sampling model's) sequence log-probs per row
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    args = DPOConfig(output_dir=str(tmp_path / "t"), precompute_ref_log_probs=True, per_device_train_batch_size=2,
                     max_length=128, report_to="none", use_cpu=True, bf16=False)
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    for side in ("chosen", "rejected"):
        assert trainer.train_dataset[f"ref_{side}_logps"] == pytest.approx(
            [r[f"round_{side}_logps"] for r in rows], abs=1e-4)

    # conversational prompts: the chat-template path gives the trainer's sums too
    generate_main([*common, "--dataset_name", str(ROOT / "examples/data/prompts-conversational"), "--output_dir",
                   str(tmp_path / "conv"), "--record_policy_logps", "true", "--limit", "4"])
    conv = [json.loads(line) for line in (tmp_path / "conv" / "train.jsonl").read_text().splitlines()]
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in conv])
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    assert trainer.train_dataset["ref_chosen_logps"] == pytest.approx([r["round_chosen_logps"] for r in conv],
                                                                      abs=1e-4)

    # off by default: existing outputs do not change
    generate_main([*common, "--dataset_name", str(ROOT / "examples/data/prompts-standard"), "--output_dir",
                   str(tmp_path / "plain")])
    plain = json.loads((tmp_path / "plain" / "train.jsonl").read_text().splitlines()[0])
    assert "round_chosen_logps" not in plain


def test_ref_model_name_or_path_is_the_reference_not_the_starting_weights(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from alignment.commands import cli
    from alignment.testing import preference_pairs

    other = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(0.01)
    other.save_pretrained(tmp_path / "m0")
    preference_pairs(4).to_json(tmp_path / "data" / "train.jsonl")
    recipe = {k: v for k, v in yaml.safe_load((ROOT / "recipes/tiny/dpo.yaml").read_text()).items()
              if k not in ("task_domains", "eval_limit_per_domain", "train_limit_per_domain")}
    recipe.update(model_name_or_path=tiny_model_dir, dataset_name=str(tmp_path / "data"), max_steps=1,
                  save_strategy="no", output_dir=str(tmp_path / "out"), ref_model_name_or_path=str(tmp_path / "m0"),
                  eval_before_training=False, eval_after_training=False)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    trainer, _ = cli.dpo_main(["--config", str(tmp_path / "r.yaml")])
    ref = dict(trainer.accelerator.unwrap_model(trainer.ref_model).named_parameters())
    for name, parameter in other.named_parameters():
        torch.testing.assert_close(ref[name], parameter)


def _iterate_recipe(tmp_path: Path, model_dir: str, **overrides) -> Path:
    (tmp_path / "verifier.py").write_text(
        "def shorter(prompts, completions, answer, **kwargs):\n"
        "    return [-float(len(c)) + 100.0 * (c.strip() == a) for c, a in zip(completions, answer)]\n")
    recipe = {
        "model_name_or_path": model_dir, "output_dir": str(tmp_path / "iter"), "rounds": 2, "reference": "base",
        "generate": {"dataset_name": str(ROOT / "examples/data/prompts-standard"), "num_samples": 3,
                     "max_new_tokens": 6, "reward_funcs": [str(tmp_path / "verifier.py") + ":shorter"],
                     "record_policy_logps": True},
        "train": {"config": str(ROOT / "recipes/tiny/dpo.yaml"), "loss_type": "inpo", "max_steps": 1,
                  "save_strategy": "no", "eval_max_new_tokens": 6, "loss_kwargs": {"eta": 0.1, "tau": 0.02}},
        **overrides,
    }
    path = tmp_path / "iterate.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_two_inpo_rounds_reference_fixed_at_m0_and_columns_from_the_round_policy(tiny_model_dir, tmp_path):
    from alignment.commands.iterate_cli import iterate_main
    from alignment.pair_generation import policy_sequence_logps
    from transformers import AutoModelForCausalLM, AutoTokenizer

    records = iterate_main(["--config", str(_iterate_recipe(tmp_path, tiny_model_dir))])
    out = tmp_path / "iter"
    m1 = str(out / "round-1" / "model")
    assert [(r["sampled_from"], r["trained_from"], r["reference"]) for r in records] == [
        (tiny_model_dir, tiny_model_dir, tiny_model_dir), (m1, m1, tiny_model_dir)]
    train = yaml.safe_load((out / "round-2" / "train.yaml").read_text())
    assert train["loss_type"] == "inpo" and train["ref_model_name_or_path"] == tiny_model_dir
    # round 2's π_t columns are M_1's log-probs (the sampler), not M_0's
    rows = [json.loads(line) for line in (out / "round-2" / "pairs" / "train.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(m1)
    under_m1 = policy_sequence_logps(AutoModelForCausalLM.from_pretrained(m1), tokenizer, rows)
    under_m0 = policy_sequence_logps(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, rows)
    assert [r["round_chosen_logps"] for r in rows] == pytest.approx([c for c, _ in under_m1], abs=1e-4)
    assert [c for c, _ in under_m0] != pytest.approx([c for c, _ in under_m1], abs=1e-4)
    logged = json.loads((out / "round-2" / "model" / "trainer_state.json").read_text())["log_history"]
    assert any("inpo/h" in entry for entry in logged)


@pytest.mark.parametrize("overrides,message", [
    ({"reference": "init"}, "set `reference: base`"),
    ({"generate": {"dataset_name": "x", "reward_funcs": ["accuracy_reward"]}}, "set `record_policy_logps: true`"),
])
def test_iterate_refuses_inpo_without_its_columns_or_a_fixed_reference(tiny_model_dir, tmp_path, overrides, message):
    from alignment.commands.iterate_cli import iterate_main

    with pytest.raises(ValueError, match=message):
        iterate_main(["--config", str(_iterate_recipe(tmp_path, tiny_model_dir, **overrides))])
    assert not (tmp_path / "iter" / "round-1" / "pairs").exists()  # refused before any sampling


def test_the_smollm2_recipe_parses_and_passes_the_pre_round_checks(tmp_path):
    from trl import DatasetMixtureConfig, ModelConfig

    from alignment.configs import AlignmentScriptArguments, PreferenceConfig
    from alignment.commands.iterate_cli import IterativeArguments, _check_round_policy_columns, _train_recipe
    from alignment.commands.script_utils import parse_recipe
    from alignment.trainers.preference_config import resolve_loss_hparams

    args, *_ = parse_recipe((IterativeArguments,), ["--config", str(ROOT / "recipes/smollm2-135m/inpo.yaml")])
    assert args.reference == "base" and args.generate["record_policy_logps"] is True
    train = _train_recipe(args.train)
    _check_round_policy_columns(args, train)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({**train, "model_name_or_path": "smollm2-135m-instruct",
                                                         "dataset_name": "x", "ref_model_name_or_path": "m0"}))
    _, training_args, *_ = parse_recipe(
        (AlignmentScriptArguments, PreferenceConfig, ModelConfig, DatasetMixtureConfig),
        ["--config", str(tmp_path / "train.yaml")])
    assert training_args.loss_type == ["inpo"] and training_args.ref_model_name_or_path == "m0"
    hparams = resolve_loss_hparams(training_args)
    assert hparams["inpo"] == {"eta": 0.0075, "tau": 0.0025}
