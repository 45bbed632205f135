"""The most downloaded public data layouts, brought to the TRL formats the trainers read.

TRL's trainers read a fixed set of formats (standard or conversational; prompt-only, prompt-completion, preference with
an explicit or implicit prompt, language modelling with ``messages``). Two of the most downloaded public layouts carry a
redundant ``prompt`` column next to full conversations, and TRL 1.16 fails on both:

* UltraFeedback-binarized (and the handbook's other ``*_prefs`` sets): ``prompt`` is a string while ``chosen`` and
  ``rejected`` are whole conversations that start with that prompt's user turn → ``TypeError: can only concatenate str
  (not "list") to str`` in DPO's tokenizer. TRL's own `maybe_extract_prompt` (the alignment-handbook applies it too)
  splits the shared conversation prefix off as a conversational prompt; it is applied here, so nothing is parsed by hand.
* UltraChat-style SFT data (``prompt`` + ``messages``): TRL sees ``prompt`` and reads the rows as prompt-completion →
  ``KeyError: 'completion'``. The ``prompt`` column repeats the first user turn of ``messages``, which already holds
  the whole conversation, so it is dropped and the rows train as language modelling on ``messages``.

Every other layout passes through unchanged. A layout this cannot read is left to TRL's own error, except for the
unpaired format (``fmt="unpaired"``, KTO): TRL's unpaired rows (``prompt``, ``completion``, ``label``) pass as they are,
paired preference data (any layout above) is unpaired with TRL's own `unpair_preference_dataset`, and anything else
fails before training with the columns found and the fix.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("alignment")


def _columns(dataset) -> set[str]:
    return set(dataset.column_names or ())  # a streamed dataset may not know its columns: left as it is


def _is_conversation(value) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def source_format(fmt: str) -> str:
    """The format to load ``fmt``'s data in: unpaired data is loaded as preference pairs where a source has formats
    (the task suite, share mixtures) and unpaired by `unpaired_split`."""
    return "preference" if fmt == "unpaired" else fmt


def normalize_split(dataset, fmt: str, split: str = "train"):
    """One split in a layout TRL reads for ``fmt`` (``preference``, ``sft`` or ``prompt_only``); see the module doc."""
    from trl.data_utils import maybe_extract_prompt

    columns = _columns(dataset)
    if fmt == "unpaired":
        return unpaired_split(dataset, split)
    if fmt == "preference" and {"prompt", "chosen", "rejected"} <= columns and len(dataset):
        first = dataset[0]
        if isinstance(first["prompt"], str) and _is_conversation(first["chosen"]):
            logger.info("%s: `prompt` is a string but `chosen`/`rejected` are whole conversations (the "
                        "UltraFeedback-binarized layout): the shared turns become the conversational prompt.", split)
            return dataset.remove_columns("prompt").map(maybe_extract_prompt, desc="Extracting the prompt turns")
    if fmt == "sft" and {"prompt", "messages"} <= columns and "completion" not in columns:
        logger.info("%s: `messages` holds the whole conversation and `prompt` repeats its first turn (the UltraChat "
                    "layout): training on `messages`, `prompt` dropped.", split)
        return dataset.remove_columns("prompt")
    return dataset


UNPAIRED_COLUMNS = ("prompt", "completion", "label")
# Fixed, so that every process and every resumed run sees the same order (TRL's KL pairs are built per batch).
UNPAIR_SHUFFLE_SEED = 0


def unpaired_split(dataset, split: str = "train"):
    """One split as TRL's unpaired rows (``prompt``, ``completion``, ``label``: True = desirable), for KTO.

    Unpaired rows pass unchanged. Paired rows (``chosen``/``rejected``, with an explicit, implicit or UltraFeedback
    prompt) become two rows each with TRL's `unpair_preference_dataset` (chosen -> label True, rejected -> False,
    other columns copied), then are shuffled with a fixed seed: TRL's function writes each block of 1000 pairs as all
    its chosen rows then all its rejected rows, and KTO's sequential sampler would otherwise see batches of one label
    only. Any other layout is a ValueError naming the columns found.
    """
    from trl.data_utils import maybe_extract_prompt, unpair_preference_dataset

    columns = _columns(dataset)
    if not columns or set(UNPAIRED_COLUMNS) <= columns:
        return dataset
    if {"chosen", "rejected"} <= columns:
        dataset = normalize_split(dataset, "preference", split)
        if "prompt" not in _columns(dataset):  # implicit prompt: the shared turns of chosen and rejected
            dataset = dataset.map(maybe_extract_prompt, desc="Extracting the prompt turns")
        logger.info("%s: paired preference rows (`chosen`/`rejected`) unpaired with TRL's `unpair_preference_dataset`:"
                    " each pair gives a desirable (label True) and an undesirable (label False) row, then shuffled "
                    "(seed %d) so that batches mix both labels.", split, UNPAIR_SHUFFLE_SEED)
        return unpair_preference_dataset(dataset).shuffle(seed=UNPAIR_SHUFFLE_SEED)
    raise ValueError(
        f"The {split!r} split has columns {sorted(columns)}; unpaired preference training (KTO) needs TRL's unpaired "
        f"layout {list(UNPAIRED_COLUMNS)} (`label`: true for a desirable completion, false for an undesirable one) "
        "or paired preference data (`chosen` and `rejected`, with or without `prompt`), which is unpaired "
        "automatically. Rename the columns, or point `dataset_name` at data in one of these layouts "
        "(examples/data/unpaired, examples/data/preference-standard).")


def normalize_layouts(datasets, fmt: str):
    """`normalize_split` on every split of a `DatasetDict` (returns a new one)."""
    from datasets import DatasetDict

    return DatasetDict({split: normalize_split(dataset, fmt, split) for split, dataset in datasets.items()})


# Columns a split needs to be training data of each format (TRL's formats): a held-out split of prompts with answers
# serves the generation evaluation, not `trainer.evaluate()`.
_TRAINABLE = {"preference": ({"chosen", "rejected"},), "sft": ({"messages"}, {"completion"}, {"text"}),
              "prompt_only": ({"prompt"},), "unpaired": ({"completion", "label"},)}


def is_trainable_split(dataset, fmt: str) -> bool:
    """Whether ``dataset`` holds ``fmt``'s training data (a streamed split of unknown columns: yes).

    The columns must be there and filled: `datasets` gives every split of a directory the union of the files' columns,
    so held-out prompts next to generated pairs have `chosen`/`rejected` columns of None.
    """
    if dataset.column_names is None:
        return True
    first = dataset[0] if len(dataset) else {}
    return any(all(first.get(column) is not None for column in needed) for needed in _TRAINABLE[fmt])
