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

Every other layout passes through unchanged. A layout this cannot read is left to TRL's own error.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("alignment")


def _columns(dataset) -> set[str]:
    return set(dataset.column_names or ())  # a streamed dataset may not know its columns: left as it is


def _is_conversation(value) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def normalize_split(dataset, fmt: str, split: str = "train"):
    """One split in a layout TRL reads for ``fmt`` (``preference``, ``sft`` or ``prompt_only``); see the module doc."""
    from trl.data_utils import maybe_extract_prompt

    columns = _columns(dataset)
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


def normalize_layouts(datasets, fmt: str):
    """`normalize_split` on every split of a `DatasetDict` (returns a new one)."""
    from datasets import DatasetDict

    return DatasetDict({split: normalize_split(dataset, fmt, split) for split, dataset in datasets.items()})


# Columns a split needs to be training data of each format (TRL's formats): a held-out split of prompts with answers
# serves the generation evaluation, not `trainer.evaluate()`.
_TRAINABLE = {"preference": ({"chosen", "rejected"},), "sft": ({"messages"}, {"completion"}, {"text"}),
              "prompt_only": ({"prompt"},)}


def is_trainable_split(dataset, fmt: str) -> bool:
    """Whether ``dataset`` holds ``fmt``'s training data (a streamed split of unknown columns: yes).

    The columns must be there and filled: `datasets` gives every split of a directory the union of the files' columns,
    so held-out prompts next to generated pairs have `chosen`/`rejected` columns of None.
    """
    if dataset.column_names is None:
        return True
    first = dataset[0] if len(dataset) else {}
    return any(all(first.get(column) is not None for column in needed) for needed in _TRAINABLE[fmt])
