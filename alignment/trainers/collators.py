"""Collators shared by the trainers: per-example dataset columns carried into every batch as ``[B]`` tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..losses.registry import preference_columns

# Columns whose values are names (strings in datasets) and become integer ids; every other column becomes float32.
_CATEGORICAL_COLUMNS = ("domain",)


@dataclass
class ExtraColumnsCollator:
    """Wraps a TRL collator and passes the per-example columns (`margin`, `weight`, `domain`, ...) as ``[B]`` tensors.

    The columns are those the loss registry declares (`alignment.losses.preference_columns()`, read at each call), so
    a new column (`register_preference_column`) reaches the batch without an edit here, as float32.

    Domains are strings in datasets; they become integer ids here, in order of first appearance per trainer
    (`domain_names` keeps the mapping, shared with the trainer for logging).
    """

    base: Callable[[list[dict[str, Any]]], dict[str, Any]]
    domain_names: list[str]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(examples)
        first = examples[0]
        for column in preference_columns():
            if column not in first:
                continue
            if column in _CATEGORICAL_COLUMNS:
                batch[column] = torch.tensor([domain_id(self.domain_names, example[column]) for example in examples])
            else:
                batch[column] = torch.tensor([float(example[column]) for example in examples], dtype=torch.float32)
        return batch


def domain_id(domain_names: list[str], name: Any) -> int:
    """The integer id of domain ``name``: its index in ``domain_names``, appended first when unseen (e.g. an eval-only
    domain), so the ids of every batch share one mapping with the trainer's logs."""
    name = str(name)
    if name not in domain_names:
        domain_names.append(name)
    return domain_names.index(name)
