"""Keep credentials out of everything a run writes or pushes.

A `hub_token` given in a recipe or on the command line reaches two things that end up in `output_dir` (and, with
`push_to_hub`, on the Hub):

- the recipe dict, written as `recipe.yaml` and into the model card (its `cli_overrides` too): `redact` replaces the
  value of every secret-looking key there (`parse_recipe` applies it at the source, `save_recipe` and
  `render_model_card` again, for recipes built by hand);
- the training arguments, which the Trainer pickles whole into `training_args.bin`, in `output_dir` and in every
  `checkpoint-*`. transformers' `TrainingArguments.to_dict` masks `*_token` fields, but the pickle does not.
  `detach_hub_token` takes the token off the arguments before any trainer is built, so no save, callback or logger
  can see it; the caller keeps it and hands it to the push alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "SECRET_WORDS", "detach_hub_token", "is_secret_key", "redact"]

REDACTED = "<redacted>"

# A key is secret when its last word is one of these: `hub_token`, `HF_TOKEN`, `client_secret`, `db_password`.
# The last word, not any substring: `eval_max_new_tokens`, `token_weighting` and `include_num_input_tokens_seen`
# are settings a recipe must keep to be reproducible.
SECRET_WORDS = frozenset({"token", "secret", "password"})

# transformers' `PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES`: tokenizer vocabulary strings (`pad_token:
# <|im_end|>` in an SFT recipe), not credentials. Spelled out so that redacting needs no transformers import.
_TOKENIZER_TOKENS = frozenset(
    {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}
)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SEP = re.compile(r"[^a-z0-9]+")


def is_secret_key(key: str) -> bool:
    """Whether a config key / command-line flag names a credential (`--hub-token`, `hubToken`, `HF_TOKEN`, ...)."""
    words = [w for w in _WORD_SEP.split(_CAMEL.sub("_", str(key)).lower()) if w]
    if not words or "_".join(words) in _TOKENIZER_TOKENS:
        return False
    return words[-1] in SECRET_WORDS


def _redact_arguments(items: list) -> list:
    """`--key value` and `--key=value` pairs of an argument list with secret keys get their value replaced."""
    out, hide_next = [], False
    for item in items:
        if hide_next and not (isinstance(item, str) and item.startswith("--")):
            out.append(REDACTED)
        elif isinstance(item, str) and item.startswith("-"):
            flag, eq, _ = item.partition("=")
            out.append(f"{flag}={REDACTED}" if eq and is_secret_key(flag) else item)
        else:
            out.append(redact(item))
        hide_next = isinstance(item, str) and item.startswith("-") and "=" not in item and is_secret_key(item)
    return out


def redact(value: Any) -> Any:
    """A copy of `value` with every secret in it replaced by `REDACTED`.

    Mappings (nested at any depth): the value of each secret key (`is_secret_key`) that is set (not None). Lists and
    tuples: their elements, and in argument lists (`cli_overrides`) the value after `--secret_key` or `=`. Anything
    else is returned as is; the input is not modified.
    """
    if isinstance(value, Mapping):
        return {k: REDACTED if v is not None and is_secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return _redact_arguments(value)
    if isinstance(value, tuple):
        return tuple(_redact_arguments(list(value)))
    return value


def detach_hub_token(training_args) -> str | None:
    """Take `hub_token` off the training arguments (it becomes None) and return it.

    After this the arguments can be pickled, logged and copied (`training_args.bin` in every checkpoint, TRL's
    config copies, tracker hparams) without the token; the push is given the returned value explicitly. With the
    Trainer's own `push_to_hub` off (`train_and_save`), nothing in transformers or TRL reads `hub_token`.
    """
    token = getattr(training_args, "hub_token", None)
    if token is not None:
        training_args.hub_token = None
    return token
