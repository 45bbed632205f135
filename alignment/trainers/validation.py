"""Checks on a preference dataset and model that run before training, so bad input fails early and says the fix."""

from __future__ import annotations

import math
from typing import Any

from datasets import Dataset

from ..losses.registry import EXTRAS


def _content(value: Any) -> str:
    """The text of a completion, whether plain text or a list of chat messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(str(message.get("content") or "") for message in value if isinstance(message, dict))
    return "" if value is None else str(value)


def is_conversational_value(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def fill_unused_chosen(dataset: Any, name: str, losses_reading_chosen: list[str]) -> Any:
    """Let rows without a chosen response train losses that read only the rejected side (NPO's forget response).

    A `forget` column is taken as the `rejected` side. Rows whose `chosen` is missing or empty get a copy of their
    rejected response there; the loss never reads it, so it gets zero gradient. Raises if the dataset has no
    `chosen` column and a selected loss reads the chosen side (`losses_reading_chosen`), naming them. Datasets with a chosen response on every row come back
    unchanged.
    """
    if dataset is None or not hasattr(dataset, "column_names") or dataset.column_names is None:
        return dataset
    columns = set(dataset.column_names)
    if "forget" in columns:
        if "rejected" in columns:
            raise ValueError(f"The {name} dataset has both `forget` and `rejected` columns; keep one (the forget "
                             "response is the rejected side).")
        dataset = dataset.rename_column("forget", "rejected")
        columns = set(dataset.column_names)
    if "rejected" not in columns:
        return dataset  # check_preference_dataset names the missing column
    if "chosen" in columns:
        if losses_reading_chosen or not isinstance(dataset, Dataset):
            return dataset  # empty chosen rows then fail in check_preference_dataset, which names the row
        missing = [i for i, value in enumerate(dataset["chosen"]) if not _content(value).strip()]
        if not missing:
            return dataset
        where = f"rows {missing[:5]}{'...' if len(missing) > 5 else ''} have no `chosen` response"
    else:
        where = "it has no `chosen` column"
    if losses_reading_chosen:
        raise ValueError(
            f"The {name} dataset cannot train {losses_reading_chosen}: {where}, and these losses read the chosen "
            "side. Forget-only rows (a `prompt` and a `forget`/`rejected` response) train losses that read only the "
            "rejected side, e.g. `loss_type: npo`; otherwise add chosen responses or drop those rows."
        )

    def copy_rejected(row):
        chosen = row.get("chosen")
        return {"chosen": chosen if _content(chosen).strip() else row["rejected"]}

    return dataset.map(copy_rejected, desc=f"Filling the unused chosen side of forget-only rows ({name})")


def nonfinite_rows(values: Any) -> list[int]:
    """Indices of the values that are not finite numbers (NaN, ±inf, None, strings)."""
    return [index for index, value in enumerate(values)
            if not isinstance(value, (int, float)) or not math.isfinite(value)]


def check_finite_column(dataset: Any, name: str, column: str) -> None:
    """`ValueError` naming `column` and its bad rows unless every value is a finite number.

    A per-example number multiplies or shifts the loss, so one inf (or NaN) turns every gradient of its batch into
    NaN and, once applied, every weight of the model.
    """
    values = dataset[column]
    bad = nonfinite_rows(values)
    if bad:
        shown = ", ".join(f"{index} ({values[index]!r})" for index in bad[:10])
        raise ValueError(
            f"The {name} dataset has a `{column}` that is not a finite number in {len(bad)} row(s): {shown}"
            f"{' ...' if len(bad) > 10 else ''}. Every `{column}` must be a finite number: fix those rows or drop "
            f"them, e.g. `dataset.filter(lambda row: math.isfinite(row['{column}']))`."
        )


def check_preference_dataset(dataset: Any, name: str, required_extras: tuple[str, ...] = ()) -> None:
    """Raise a `ValueError` naming the problem and the fix if `dataset` cannot train a preference loss.

    Checks: `chosen` and `rejected` columns present; the extra columns the loss needs (e.g. `margin`) present; no
    empty completion; extra columns numeric and finite where they must be.
    """
    if not isinstance(dataset, Dataset):
        return  # streaming datasets are checked lazily by TRL; scanning them would consume them
    columns = set(dataset.column_names)
    for column in ("chosen", "rejected"):
        if column not in columns:
            raise ValueError(
                f"The {name} dataset has no `{column}` column (columns: {sorted(columns)}). A preference dataset needs "
                "`prompt`, `chosen` and `rejected` (or `chosen`/`rejected` conversations sharing the prompt turns). "
                "Rename your columns, e.g. `dataset.rename_column('good', 'chosen')`."
            )
    for column in required_extras:
        if column not in columns:
            raise ValueError(
                f"The {name} dataset has no `{column}` column, which the selected loss_type needs. "
                + (
                    "Annotate it with `scripts/annotate_margins.py` (reward-model margins) or choose another loss_type."
                    if column == "margin"
                    else EXTRAS[column].source or f"Add a `{column}` column or choose another loss_type."
                )
            )
    for column in ("chosen", "rejected"):
        for index, value in enumerate(dataset[column]):
            if not _content(value).strip():
                raise ValueError(
                    f"Row {index} of the {name} dataset has an empty `{column}` completion. Every pair needs two "
                    "non-empty responses: drop or fix such rows, e.g. `dataset.filter(lambda r: r['chosen'] and "
                    "r['rejected'])`."
                )
    if "prompt" in columns:
        for index, value in enumerate(dataset["prompt"]):
            if not _content(value).strip():
                raise ValueError(
                    f"Row {index} of the {name} dataset has an empty `prompt`. Fix or drop the row."
                )
    for column in ("margin", "weight"):
        if column in columns:
            check_finite_column(dataset, name, column)
    if "weight" in columns:
        for index, value in enumerate(dataset["weight"]):
            if value < 0:
                raise ValueError(f"Row {index} of the {name} dataset has a negative `weight` ({value}).")
    bounds = {"empty_trace": ({0, 1}, "0 (trace pair) or 1 (empty-trace pair)"),
              "preference_prob": (None, "a probability in [0, 1]")}
    for column, (allowed, description) in bounds.items():
        if column in columns:
            for index, value in enumerate(dataset[column]):
                ok = isinstance(value, (bool, int, float)) and (
                    value in allowed if allowed is not None else 0 <= value <= 1)
                if not ok:
                    raise ValueError(f"Row {index} of the {name} dataset has `{column}` = {value!r}; it must be "
                                     f"{description}.")


def check_chat_template(tokenizer: Any, dataset: Any, model_name: str) -> None:
    """A conversational dataset needs a tokenizer with a chat template."""
    if not isinstance(dataset, Dataset) or len(dataset) == 0:
        return
    first = dataset[0]
    conversational = any(is_conversational_value(first.get(key)) for key in ("prompt", "chosen", "messages"))
    if conversational and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"The dataset is conversational but the tokenizer of `{model_name}` has no chat template. Set "
            "`chat_template: chatml` (or a path to a Jinja template) in the recipe, or use an instruct model that "
            "ships one."
        )
