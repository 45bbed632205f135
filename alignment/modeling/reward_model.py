"""Bradley-Terry reward models: load one (a fresh 1-label classifier to train, or a trained one to score with) and
score token sequences and preference pairs with it.

Scores are computed on exactly the token ids `RewardTrainer` trains on: the pairs go through TRL's own
`RewardTrainer._prepare_dataset` (chat template applied to `prompt + chosen`, no generation prompt; EOS appended to
plain-text pairs), with no length filter, and are right-padded like TRL's collator, so the classifier reads the same
last non-pad token it was trained to score. Used by reward training and margin annotation
(`alignment.commands.reward_cli`), by reward-model rewards (`alignment.rewards.sources`) and by the evaluation.
"""

from __future__ import annotations

import contextlib

from types import SimpleNamespace
from typing import Any

import torch

from .model_loading import load_model_and_tokenizer, load_tokenizer


# --------------------------------------------------------------------------------------------------------- loading


def load_reward_model_and_tokenizer(model_args, script_args, training_args):
    """A fresh 1-label sequence classifier on top of a causal LM (random `score` head), and its tokenizer.

    Same resolution as `load_model_and_tokenizer`: embedded-model aliases, fp32 on CPU and bf16 on GPU unless `dtype`
    is set. Returns ``(model, tokenizer, resolved_path)``.
    """
    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    with suppress_seqcls_warning():  # the new `score` head is missing and `lm_head` unused: both expected
        model, tokenizer, path = load_model_and_tokenizer(
            model_args, script_args, training_args, AutoModelForSequenceClassification, num_labels=1
        )
    # The classifier reads the last non-pad token, so the model must know the pad id (RewardTrainer sets it too).
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, path


def load_reward_model(path: str, dtype: str = "float32", device: str | None = None, chat_template: str | None = None):
    """A trained reward model directory (or Hub id) for scoring: ``(model in eval mode, tokenizer)``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(path)
    if getattr(config, "num_labels", None) != 1:
        raise ValueError(
            f"{path} is not a reward model: it has num_labels={getattr(config, 'num_labels', None)} "
            f"(architectures {getattr(config, 'architectures', None)}); a reward model outputs one score "
            "(`AutoModelForSequenceClassification` with num_labels=1, e.g. trained by scripts/run_reward.py)."
        )
    tokenizer = load_tokenizer(path, chat_template=chat_template)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype))
    if model.config.get_text_config().pad_token_id is None:
        model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


# --------------------------------------------------------------------------------------------------------- scoring


def check_pair_columns(dataset, name: str) -> None:
    """ValueError naming the missing column when `dataset` is not a preference dataset."""
    for column in ("chosen", "rejected"):
        if column not in dataset.column_names:
            raise ValueError(
                f"The {name} dataset has no `{column}` column (columns: {sorted(dataset.column_names)}). Scoring "
                "margins needs preference pairs: `chosen` and `rejected` (plus an optional `prompt`), conversational "
                "or plain text."
            )


@contextlib.contextmanager
def _no_process_ordering():
    """TRL 1.16's `_prepare_dataset` lets the main process go first with a barrier (`global_then_local_main_first`).
    Scoring runs on one process (the main one, after a multi-process training run), where that barrier waits for
    processes that never arrive (a crash in gloo, a hang in NCCL): the ordering is switched off for the call."""
    import trl.trainer.reward_trainer as reward_trainer

    original = getattr(reward_trainer, "global_then_local_main_first", None)
    if original is None:  # another TRL: nothing to switch off
        yield
        return
    reward_trainer.global_then_local_main_first = contextlib.nullcontext
    try:
        yield
    finally:
        reward_trainer.global_then_local_main_first = original


def tokenize_pairs(dataset, tokenizer):
    """``(chosen_ids, rejected_ids)`` per row, exactly as TRL's `RewardTrainer` tokenizes them (no length filter)."""
    from trl import RewardTrainer

    # `_prepare_dataset` only reads `max_length` (None: keep every row, so ids stay aligned with the rows) and
    # `dataset_num_proc` from the config; calling TRL's own code keeps scoring in step with training.
    args = SimpleNamespace(max_length=None, dataset_num_proc=None)
    with _no_process_ordering():
        prepared = RewardTrainer._prepare_dataset(None, dataset, tokenizer, args, "scoring")
    if len(prepared) != len(dataset):
        raise RuntimeError(f"Tokenization kept {len(prepared)} of {len(dataset)} rows; expected all of them.")
    return prepared["chosen_ids"], prepared["rejected_ids"]


@torch.no_grad()
def score_sequences(model, token_ids: list[list[int]], pad_token_id: int, batch_size: int = 16,
                    progress: Any = None) -> list[float]:
    """The scalar reward of each token sequence, in batches, right-padded like TRL's `DataCollatorForPreference`."""
    from trl.trainer.utils import pad

    device = next(model.parameters()).device
    # Longest first: similar lengths share a batch (less padding), and an out-of-memory error shows up at once.
    order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
    scores = [0.0] * len(token_ids)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        ids = [torch.tensor(token_ids[i]) for i in index]
        input_ids = pad(ids, padding_value=pad_token_id, padding_side="right").to(device)
        mask = pad([torch.ones_like(t) for t in ids], padding_value=0, padding_side="right").to(device)
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        for i, value in zip(index, logits[:, 0].float().tolist()):
            scores[i] = value
        if progress is not None:
            progress.update(len(index))
    return scores


def score_pairs(model, tokenizer, dataset, batch_size: int = 16, desc: str = "Scoring pairs",
                show_progress: bool = True) -> tuple[list[float], list[float]]:
    """``(r_chosen, r_rejected)``: the reward model's scores of ``prompt + chosen`` and ``prompt + rejected``."""
    from tqdm.auto import tqdm

    check_pair_columns(dataset, "scored")
    chosen_ids, rejected_ids = tokenize_pairs(dataset, tokenizer)
    pad_id = model.config.get_text_config().pad_token_id
    if pad_id is None:
        pad_id = tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=2 * len(dataset), desc=desc, unit="seq", disable=not show_progress) as bar:
            chosen = score_sequences(model, chosen_ids, pad_id, batch_size, bar)
            rejected = score_sequences(model, rejected_ids, pad_id, batch_size, bar)
    finally:
        model.train(was_training)
    return chosen, rejected
