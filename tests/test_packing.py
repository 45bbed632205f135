"""Padding-free (packed) preference batches: `alignment.packing` and `PreferenceTrainer(padding_free=True)`."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.utils import add_fused_lm_head

from alignment.configs import PreferenceConfig
from alignment.packing import (PACKED_SDPA, check_packing_isolates, pack_sequences, packed_fused_forward,
                               packed_sdpa_attention, register_packed_sdpa)
from alignment.testing import float32_sum_tolerance, perturb_parameters_, preference_pairs, trainer_test_args
from alignment.trainers import PreferenceTrainer

FUSED_OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


# ----------------------------------------------------------------------------- pack / unpack by hand
def test_pack_right_padded_batch_by_hand():
    # Three sequences of lengths 3, 1, 4 (T = 4), right padding (TRL's collator); pad id 0.
    ids = torch.tensor([[11, 12, 13, 0], [21, 0, 0, 0], [31, 32, 33, 34]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    # labels at pads left unmasked (0): the boundary must come from the attention mask, not from the labels
    labels = torch.tensor([[-100, 12, 13, 0], [21, 0, 0, 0], [-100, -100, 33, 34]])
    packed = pack_sequences(ids, mask, labels)
    assert packed.input_ids.tolist() == [[11, 12, 13, 21, 31, 32, 33, 34]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0, 0, 1, 2, 3]]
    # position p is scored against the next token of ITS sequence; every last token (13, 21, 34) gets -100, so 21 is
    # never scored from 13's context nor 31 from 21's.
    assert packed.shift_labels.tolist() == [[12, 13, -100, -100, -100, 33, 34, -100]]


def test_pack_left_padded_batch_by_hand():
    ids = torch.tensor([[0, 11, 12, 13], [0, 0, 0, 21], [31, 32, 33, 34]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]])
    labels = ids.masked_fill(mask == 0, -100)
    packed = pack_sequences(ids, mask, labels)
    assert packed.input_ids.tolist() == [[11, 12, 13, 21, 31, 32, 33, 34]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0, 0, 1, 2, 3]]
    assert packed.shift_labels.tolist() == [[12, 13, -100, -100, 32, 33, 34, -100]]


@pytest.mark.parametrize("side", ["right", "left"])
def test_unpack_puts_each_value_where_the_padded_fused_head_would(side):
    if side == "right":
        ids, mask = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]]), torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    else:
        ids, mask = torch.tensor([[0, 5, 6, 7], [0, 0, 8, 9]]), torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    packed = pack_sequences(ids, mask, ids.masked_fill(mask == 0, -100))
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]], requires_grad=True)  # one per real token: 5, 6, 7, 8, 9
    padded = packed.unpack(values)
    # Column t of the padded fused head holds the value computed AT token t (scoring t+1). With left padding the last
    # real tokens (values 3 and 5) have no column: their label is past the row, -100, so the head's value is 0 anyway.
    expected = [[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]] if side == "right" else [[0.0, 1.0, 2.0], [0.0, 0.0, 4.0]]
    assert padded.tolist() == expected
    padded.sum().backward()
    kept = [1.0, 1.0, 1.0, 1.0, 1.0] if side == "right" else [1.0, 1.0, 0.0, 1.0, 0.0]
    assert values.grad.tolist() == [kept]


def test_pack_refuses_holes_in_the_attention_mask():
    ids = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="padding_free"):
        pack_sequences(ids, torch.tensor([[1, 0, 1, 1]]), ids)


def test_unpack_refuses_values_of_another_length():
    ids = torch.tensor([[1, 2, 0]])
    packed = pack_sequences(ids, torch.tensor([[1, 1, 0]]), ids)
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        packed.unpack(torch.zeros(1, 3))


# ----------------------------------------------------------------------------- packed forward on the tiny Llama
def _fused_model(model_dir, attn_implementation, seed=None):
    if attn_implementation == PACKED_SDPA:
        register_packed_sdpa()
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attn_implementation)
    if seed is not None:
        perturb_parameters_(model, seed=seed)
    add_fused_lm_head(model, outputs=FUSED_OUTPUTS)
    return model.eval()


def _ragged_batch(vocab_size, lengths, prompt=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(3, vocab_size, (length,), generator=generator)
        mask[row, :length] = 1
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :prompt] = -100  # prompt tokens are not scored, as in a preference batch
    return ids, mask, labels


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager", PACKED_SDPA])
def test_packed_outputs_equal_padded_outputs(tiny_model_dir, attn_implementation):
    # policy (perturbed) and reference (the checkpoint): two different weight sets, both must match
    for seed in (None, 3):
        model = _fused_model(tiny_model_dir, attn_implementation, seed=seed)
        ids, mask, labels = _ragged_batch(model.config.vocab_size, [7, 19, 4, 12, 30, 9])
        with torch.no_grad():
            padded = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
            packed = packed_fused_forward(model, {"input_ids": ids, "attention_mask": mask, "use_cache": False},
                                          pack_sequences(ids, mask, labels))
        for name in FUSED_OUTPUTS:
            assert packed[name].shape == padded[name].shape == (6, 29), name
            if name == "is_top1":
                assert torch.equal(packed[name], padded[name])
            else:
                torch.testing.assert_close(packed[name], padded[name], rtol=0, atol=1e-5, msg=name)
        assert (padded.log_probs != 0).sum() == (labels[:, 1:] != -100).sum()  # the test compares real values


@pytest.mark.parametrize("attn_implementation", ["sdpa", PACKED_SDPA])
def test_a_packed_row_does_not_attend_across_sequences(tiny_model_dir, attn_implementation):
    model = _fused_model(tiny_model_dir, attn_implementation)
    ids, mask, labels = _ragged_batch(model.config.vocab_size, [10, 10, 10])
    changed = ids.clone()
    changed[0] = (ids[0] + 7) % model.config.vocab_size  # another first sequence, same length

    def second_and_third(input_ids, restart_positions=True):
        packed = pack_sequences(input_ids, mask, labels)
        kwargs = {"input_ids": packed.input_ids, "shift_labels": packed.shift_labels, "fused_lm_head": True}
        if restart_positions:
            kwargs["position_ids"] = packed.position_ids
        with torch.no_grad():
            return packed.unpack(model(**kwargs).log_probs)[1:]

    torch.testing.assert_close(second_and_third(ids), second_and_third(changed), rtol=0, atol=1e-6)
    # The control: the same row read as ONE sequence (positions 0..L-1) does see the first sequence's tokens.
    # (packed_sdpa then takes its plain-sdpa path: one causal sequence.)
    leak = (second_and_third(ids, False) - second_and_third(changed, False)).abs().max()
    assert leak > 1e-3


def test_isolation_probe_accepts_llama_and_refuses_a_model_that_ignores_position_ids(tiny_model_dir, monkeypatch):
    model = _fused_model(tiny_model_dir, "sdpa")
    check_packing_isolates(model, model.config.vocab_size)  # no error
    forward = model.forward

    def no_positions(*args, position_ids=None, **kwargs):  # a model that cannot see sequence boundaries
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", no_positions)
    with pytest.raises(ValueError, match="padding_free"):
        check_packing_isolates(model, model.config.vocab_size)


# ----------------------------------------------------------------------------- PreferenceTrainer
def _ragged_pairs(n=8):
    """Completions of very different lengths, so the packed row is much shorter than the padded block."""
    dataset = preference_pairs(n)
    long_text = "apples " * 9

    def widen(row, index):
        if index % 2:
            row["chosen"] = [{"role": "assistant", "content": long_text + row["chosen"][0]["content"]}]
        else:
            row["rejected"] = [{"role": "assistant", "content": row["rejected"][0]["content"] + " " + long_text}]
        return row

    return dataset.map(widen, with_indices=True)


def _trainer(model_dir, tmp_path, dataset, **overrides):
    return PreferenceTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir),
                             args=PreferenceConfig(**trainer_test_args(tmp_path, **overrides)), train_dataset=dataset,
                             processing_class=AutoTokenizer.from_pretrained(model_dir))


@pytest.mark.parametrize("overrides", [
    {"loss_type": ["sigmoid"]},
    # wpo reads `log_sum_sq_probs`, the entropy weighting reads `entropy`: every per-token output is unpacked
    {"loss_type": ["wpo"], "token_weighting": "entropy"},
], ids=["sigmoid", "wpo+entropy"])
def test_training_step_is_the_same_padded_and_packed(tiny_model_dir, tmp_path, overrides, caplog):
    dataset = _ragged_pairs()
    with caplog.at_level(logging.WARNING):
        packed = _trainer(tiny_model_dir, tmp_path, dataset, padding_free=True, beta=0.3, **overrides)
    assert "temporarily unavailable" not in caplog.text  # TRL's "disabled" warning must not be printed
    assert packed.args.padding_free is True  # the user's args keep their value
    # sdpa models switch to the per-sequence attention, policy and reference; the padded trainer keeps sdpa
    assert packed.model.config._attn_implementation == packed.ref_model.config._attn_implementation == PACKED_SDPA
    assert "packed_sdpa" not in packed.model.config.to_json_string()  # a saved model does not depend on it
    padded = _trainer(tiny_model_dir, tmp_path, dataset, beta=0.3, **overrides)
    for trainer in (packed, padded):
        perturb_parameters_(trainer.model)  # policy != reference
        trainer.model.train()
    batch = next(iter(padded.get_train_dataloader()))
    assert (batch["attention_mask"] == 0).float().mean() > 0.25  # a batch where packing removes real padding
    calls = []
    packed.model.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs), with_kwargs=True)
    packed_loss = packed.compute_loss(packed.model, dict(batch))
    assert [c["inputs_embeds"].shape[0] if c.get("inputs_embeds") is not None else c["input_ids"].shape[0]
            for c in calls] == [1]  # the policy ran on ONE packed row (the reference is a separate module)
    padded_loss = padded.compute_loss(padded.model, dict(batch))
    assert abs(padded_loss.item() - torch.log(torch.tensor(2.0)).item()) > 1e-3  # not the trivial value
    torch.testing.assert_close(packed_loss, padded_loss, rtol=0, atol=1e-5)
    packed_loss.backward()
    padded_loss.backward()
    for (name, p_packed), (_, p_padded) in zip(packed.model.named_parameters(), padded.model.named_parameters()):
        torch.testing.assert_close(p_packed.grad, p_padded.grad, rtol=1e-4, atol=1e-6, msg=name)
    # Metrics are float32 reductions summed in another order (one packed row vs a padded block), so they match to the
    # rounding of those sums, not to 1e-6 of their value: rewards/chosen = β(Σ log π − Σ log π_ref) is a small difference
    # of two large sums (it once differed by 2.3e-6 on -0.56). Each metric is a batch mean of per-sequence sums of at
    # most T terms, so it gets the bound for T terms of its per-sequence magnitude; loss and gradients above stay strict.
    metrics = {key: (packed._metrics["train"][key][-1], padded._metrics["train"][key][-1])
               for key in ("rewards/chosen", "logps/chosen", "logps/rejected", "entropy", "mean_token_accuracy")}
    num_terms = batch["attention_mask"].shape[1]
    summed_logps = abs(metrics["logps/chosen"][1])  # mean Σ|log π| of a chosen sequence (all terms are negative)
    magnitudes = {"rewards/chosen": 0.3 * 2 * summed_logps,  # β · (policy sum + reference sum, of similar size)
                  "logps/chosen": summed_logps, "logps/rejected": abs(metrics["logps/rejected"][1]),
                  "entropy": abs(metrics["entropy"][1]), "mean_token_accuracy": 1.0}
    for key, (got, expected) in metrics.items():
        tolerance = float32_sum_tolerance(num_terms, magnitudes[key])
        # one token more or less moves each metric by more than 0.01 (a log-prob of a 320-token vocabulary is ~ -5)
        assert tolerance < 1e-2, (key, tolerance)
        assert got == pytest.approx(expected, rel=0, abs=tolerance), key


def test_reference_is_packed_too_and_matches(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, _ragged_pairs(), padding_free=True)
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    packed = trainer._reference_token_logps(kwargs, labels, pack_sequences(batch["input_ids"],
                                                                           batch["attention_mask"], labels))
    padded = trainer._reference_token_logps(kwargs, labels)
    assert (padded != 0).any()
    torch.testing.assert_close(packed, padded, rtol=0, atol=1e-5)


def test_packed_sdpa_cuts_the_row_at_position_restarts():
    # One head, D = 1, value = position index; uniform scores (q = k = 0): causal attention averages the values seen.
    class Layer(torch.nn.Module):
        is_causal, training, num_key_value_groups = True, False, 1

    q = torch.zeros(1, 1, 5, 1)
    v = torch.arange(5.0).view(1, 1, 5, 1)
    out, _ = packed_sdpa_attention(Layer(), q, q, v, None, position_ids=torch.tensor([[0, 1, 2, 0, 1]]))
    # sequence 1: values 0, 1, 2 -> running means 0, 0.5, 1; sequence 2 restarts: values 3, 4 -> 3, 3.5
    assert out.reshape(-1).tolist() == pytest.approx([0.0, 0.5, 1.0, 3.0, 3.5])


def test_reference_cache_works_with_padding_free(tiny_model_dir, tmp_path):
    dataset = _ragged_pairs()
    cache = str(tmp_path / "cache")
    cached = _trainer(tiny_model_dir, tmp_path / "a", dataset, padding_free=True, reference_cache_dir=cache, beta=0.3)
    plain = _trainer(tiny_model_dir, tmp_path / "b", dataset, beta=0.3)
    for trainer in (cached, plain):
        perturb_parameters_(trainer.model)
        trainer.model.train()
    batch = next(iter(cached.get_train_dataloader()))
    cached_loss = cached.compute_loss(cached.model, dict(batch))
    plain_loss = plain.compute_loss(plain.model, {k: v for k, v in batch.items() if k != "ref_cache_row"})
    torch.testing.assert_close(cached_loss, plain_loss, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- unsupported combinations
def test_sparsepo_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="padding_free"):
        _trainer(tiny_model_dir, tmp_path, preference_pairs(4), padding_free=True, loss_type=["sparsepo"])


def test_prompt_learning_peft_is_refused(tiny_model_dir, tmp_path):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4))
    with pytest.raises(ValueError, match="padding_free.*prompt-learning"):
        PreferenceTrainer(model=model, args=PreferenceConfig(**trainer_test_args(tmp_path, padding_free=True)),
                          train_dataset=preference_pairs(4),
                          processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))


def test_model_inputs_without_a_packed_form_are_refused(tiny_model_dir):
    model = _fused_model(tiny_model_dir, "sdpa")
    ids, mask, labels = _ragged_batch(model.config.vocab_size, [5, 4])
    with pytest.raises(ValueError, match=r"padding_free.*pixel_values"):
        packed_fused_forward(model, {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.zeros(2, 3)},
                             pack_sequences(ids, mask, labels))
