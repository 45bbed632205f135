"""Collators shared by the trainers: per-example dataset columns carried into every batch as ``[B]`` tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# Per-example columns that TRL would drop and the losses may use.
EXTRA_COLUMNS = ("margin", "weight", "domain", "empty_trace", "preference_prob")
_NUMERIC_COLUMNS = tuple(column for column in EXTRA_COLUMNS if column != "domain")  # -> float [B]; domain -> ids


@dataclass
class ExtraColumnsCollator:
    """Wraps TRL's preference collator and passes `margin`, `weight` and `domain` through as ``[B]`` tensors.

    Domains are strings in datasets; they become integer ids here, in order of first appearance per trainer
    (`domain_names` keeps the mapping, shared with the trainer for logging).
    """

    base: Callable[[list[dict[str, Any]]], dict[str, Any]]
    domain_names: list[str]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(examples)
        first = examples[0]
        for column in _NUMERIC_COLUMNS:
            if column in first:
                batch[column] = torch.tensor([float(example[column]) for example in examples], dtype=torch.float32)
        if "domain" in first:
            batch["domain"] = torch.tensor([self._domain_id(example["domain"]) for example in examples])
        return batch

    def _domain_id(self, name: Any) -> int:
        name = str(name)
        if name not in self.domain_names:
            self.domain_names.append(name)
        return self.domain_names.index(name)
