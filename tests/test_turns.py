"""Assistant-turn indices of multi-turn completions (`alignment.losses.turns`) and DMPO through the trainer."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.configs import PreferenceConfig
from alignment.losses.turns import AssistantTurnMarkers, assistant_turn_markers, completion_turn_ids
from alignment.testing import build_tiny_tokenizer, float32_sum_tolerance, perturb_parameters_, preference_pairs
from alignment.trainers import PreferenceTrainer

PROMPT = [{"role": "user", "content": "What is 1 + 2?"}]
MULTI_TURN = [
    {"role": "assistant", "content": "3"},
    {"role": "user", "content": "and times 4?"},
    {"role": "assistant", "content": "12"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def tokenize_like_trl(tokenizer, prompt, completion):
    """Token ids of prompt+completion and the completion mask, split as TRL's DPOTrainer does (common prefix)."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    mask = [0] * len(prompt_ids) + [1] * (len(full_ids) - len(prompt_ids))
    return torch.tensor([full_ids]), torch.tensor([mask])


def turn_texts(tokenizer, ids, turn_ids):
    """Decoded text of each turn, in order, from the token positions labelled with it."""
    texts = []
    for turn in range(int(turn_ids.max()) + 1):
        texts.append(tokenizer.decode(ids[0][turn_ids[0] == turn].tolist()))
    return texts


def test_markers_come_from_the_chat_template(tokenizer):
    markers = assistant_turn_markers(tokenizer)
    assert tokenizer.decode(list(markers.header)) == "<|im_start|>assistant\n"
    assert tokenizer.decode(list(markers.end)) == "<|im_end|>\n"


def test_markers_need_a_chat_template():
    tok = build_tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        assistant_turn_markers(tok)


def test_multi_turn_completion_gets_one_index_per_assistant_reply(tokenizer):
    ids, mask = tokenize_like_trl(tokenizer, PROMPT, MULTI_TURN)
    turn_ids = completion_turn_ids(ids, mask, assistant_turn_markers(tokenizer))
    assert turn_texts(tokenizer, ids, turn_ids) == ["3<|im_end|>\n", "12<|im_end|>\n"]
    # everything else (prompt, the user turn inside the completion, the second assistant header) is -1
    unlabelled = tokenizer.decode(ids[0][turn_ids[0] == -1].tolist())
    prompt_text = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert unlabelled == prompt_text + "<|im_start|>user\nand times 4?<|im_end|>\n<|im_start|>assistant\n"
    assert (turn_ids[mask == 0] == -1).all()


def test_single_turn_completion_is_all_turn_zero(tokenizer):
    ids, mask = tokenize_like_trl(tokenizer, PROMPT, MULTI_TURN[:1])
    turn_ids = completion_turn_ids(ids, mask, assistant_turn_markers(tokenizer))
    assert torch.equal(turn_ids, torch.where(mask.bool(), 0, -1))


def test_header_at_completion_start_does_not_skip_turn_zero():
    # ids: prompt 9 | header 7 8 | reply 5 | end 6 | user 4 | header 7 8 | reply 3 3 | end 6
    ids = torch.tensor([[9, 7, 8, 5, 6, 4, 7, 8, 3, 3, 6]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    turn_ids = completion_turn_ids(ids, mask, AssistantTurnMarkers(header=(7, 8), end=(6,)))
    assert turn_ids.tolist() == [[-1, -1, -1, 0, 0, -1, -1, -1, 1, 1, 1]]


def test_without_an_end_marker_a_turn_runs_to_the_next_header():
    ids = torch.tensor([[5, 6, 4, 7, 8, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])  # last position is padding
    turn_ids = completion_turn_ids(ids, mask, AssistantTurnMarkers(header=(7, 8)))
    assert turn_ids.tolist() == [[0, 0, 0, -1, -1, 1, -1]]


def test_rows_are_independent_and_padding_is_minus_one():
    ids = torch.tensor([[5, 7, 8, 3, 0], [2, 2, 2, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
    turn_ids = completion_turn_ids(ids, mask, AssistantTurnMarkers(header=(7, 8)))
    assert turn_ids.tolist() == [[0, -1, -1, 1, -1], [-1] * 5]


# ----------------------------------------------------------------------------- through the trainer
def _trainer(model_dir, tmp_path, loss_type, dataset, policy, reference):
    args = PreferenceConfig(output_dir=str(tmp_path / loss_type), loss_type=loss_type, per_device_train_batch_size=4,
                            max_steps=1, learning_rate=1e-2, report_to="none", bf16=False, use_cpu=True, seed=0,
                            save_strategy="no", max_length=96, logging_steps=1)
    return PreferenceTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                             processing_class=AutoTokenizer.from_pretrained(model_dir))


def _first_batch_loss(trainer):
    inputs = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, inputs).item()


def test_dmpo_equals_sigmoid_on_single_turn_pairs_in_the_trainer(tiny_model_dir, tmp_path):
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy = copy.deepcopy(reference)
    perturb_parameters_(policy, seed=3, scale=0.1)  # policy != reference, so the loss is not log 2
    dataset = preference_pairs(4)
    dmpo = _first_batch_loss(_trainer(tiny_model_dir, tmp_path, "dmpo", dataset, policy, reference))
    sigmoid_trainer = _trainer(tiny_model_dir, tmp_path, "sigmoid", dataset, policy, reference)
    sigmoid = _first_batch_loss(sigmoid_trainer)
    assert abs(dmpo - 0.6931471805599453) > 1e-4
    # DMPO sums the turn-weighted log-probs in another order than sigmoid's plain sums, so the two losses agree to the
    # float32 rounding of h = four sums of up to T token log-probs (|∂loss/∂h| ≤ β = 0.1), not to 1e-6 of the loss.
    metrics = sigmoid_trainer._metrics["train" if sigmoid_trainer.model.training else "eval"]
    summed = 2 * (abs(metrics["logps/chosen"][-1]) + abs(metrics["logps/rejected"][-1]))  # policy + reference sums
    tolerance = 0.1 * float32_sum_tolerance(96, summed)  # max_length 96 bounds the terms of each sum
    assert tolerance < 1e-3  # a token counted wrong moves the loss by ~β·|log π(token)|/2 > 0.1
    assert dmpo == pytest.approx(sigmoid, rel=0, abs=tolerance)


def test_dmpo_differs_from_sigmoid_and_counts_turns_on_multi_turn_pairs(tiny_model_dir, tmp_path):
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy = copy.deepcopy(reference)
    perturb_parameters_(policy, seed=3, scale=0.1)
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
             "chosen": [{"role": "assistant", "content": str(i + 1)}, {"role": "user", "content": "and times 2?"},
                        {"role": "assistant", "content": str(2 * i + 2)}],
             "rejected": [{"role": "assistant", "content": f"{i + 5}"}]} for i in range(4)]
    dataset = Dataset.from_list(rows)
    dmpo_trainer = _trainer(tiny_model_dir, tmp_path, "dmpo", dataset, copy.deepcopy(policy), reference)
    dmpo = _first_batch_loss(dmpo_trainer)
    sigmoid = _first_batch_loss(_trainer(tiny_model_dir, tmp_path, "sigmoid", dataset, policy, reference))
    assert dmpo != pytest.approx(sigmoid, rel=1e-4)
    dmpo_trainer.train()
    logged = [entry for entry in dmpo_trainer.state.log_history if "dmpo/turns_chosen" in entry]
    assert logged and logged[0]["dmpo/turns_chosen"] == 2.0 and logged[0]["dmpo/turns_rejected"] == 1.0
