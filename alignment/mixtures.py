"""Share-based dataset mixtures, temperature sampling and the Cooldown temperature schedule.

Pure parts (no I/O): `temperature_shares`, `scalarization_weights`, `CooldownSchedule`, `mixture_counts`,
`mixture_indices`. `build_share_mixture` applies them to in-memory datasets and `load_share_mixture` loads the
sources of a recipe's `share_mixture:` section (see docs/mixtures.md, which also compares TRL's and the
alignment-handbook's mixture weights with the shares used here). `load_handbook_mixture` loads a `dataset_mixture:`
section in the alignment-handbook / open-r1 schema with their semantics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .data import TASK_SUITE, load_task_suite
from .data_sources import load_source
from .mixture_config import POLICIES

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from .mixture_config import HandbookMixtureConfig, MixtureSourceConfig, ShareMixtureConfig



def _check_sizes(sizes: Sequence[float] | torch.Tensor) -> torch.Tensor:
    sizes = torch.as_tensor(sizes, dtype=torch.float64)
    if sizes.ndim != 1 or sizes.numel() == 0:
        raise ValueError(f"`sizes` must be a non-empty list with one size per domain, got {sizes.tolist()}.")
    if not torch.isfinite(sizes).all() or (sizes < 0).any() or not (sizes > 0).any():
        raise ValueError(f"`sizes` must be finite, non-negative and not all zero, got {sizes.tolist()}.")
    return sizes


def _check_temperature(temperature: float, what: str = "temperature") -> None:
    if not (isinstance(temperature, (int, float)) and temperature > 0) or math.isnan(temperature):
        raise ValueError(f"`{what}` must be > 0 (1: proportional to size, larger: flatter, inf: uniform), got "
                         f"{temperature!r}.")


def temperature_shares(sizes: Sequence[float] | torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature sampling shares p(i; τ) = n_i^(1/τ) / Σ_j n_j^(1/τ); [K] float64.

    From "Upsample or Upweight?" (Li et al., NAACL 2025, arXiv 2410.04579), and multilingual MT before it: τ = 1 is
    proportional to the domain sizes n_i, τ → ∞ (``math.inf`` allowed) is uniform, τ < 1 sharpens toward the largest
    domain. Empty domains (n_i = 0) always get share 0.
    """
    sizes = _check_sizes(sizes)
    _check_temperature(temperature)
    nonempty = sizes > 0
    logits = torch.full_like(sizes, -math.inf)
    # In log space: n^(1/τ) overflows float64 for τ < 1 and large n.
    logits[nonempty] = sizes[nonempty].log() / temperature if math.isfinite(temperature) else 0.0
    return torch.softmax(logits, dim=0)


def scalarization_weights(sizes: Sequence[float] | torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example loss weights w_i = p(i; τ) / p(i; 1) that make proportional sampling match τ-sampling in
    expectation ("upweight" instead of "upsample", arXiv 2410.04579 §2); [K]. Equal under full-batch gradient descent,
    but with higher SGD gradient variance, growing with τ and with the size skew."""
    return temperature_shares(sizes, temperature) / temperature_shares(sizes, 1.0).clamp(min=torch.finfo(
        torch.float64).tiny)


@dataclass(frozen=True)
class CooldownSchedule:
    """The Cooldown schedule of arXiv 2410.04579: a high temperature, then a lower one from ``switch_step`` on.

    The paper uses τ = 5 for the first half of training, then τ = 1 (one sparse switch; it reports smooth decreasing
    schedules and increasing ones (1 → 5) doing worse). ``temperature_at(step)`` is ``high_temperature`` for
    ``step < switch_step`` and ``low_temperature`` from ``switch_step`` on; ``shares_at(step, sizes)`` applies
    `temperature_shares`. Steps count from 0, as ``TrainerState.global_step`` before the first update.
    """

    high_temperature: float = 5.0
    low_temperature: float = 1.0
    switch_step: int = 0

    def __post_init__(self):
        _check_temperature(self.high_temperature, "high_temperature")
        _check_temperature(self.low_temperature, "low_temperature")
        if isinstance(self.switch_step, bool) or not isinstance(self.switch_step, int) or self.switch_step < 0:
            raise ValueError(f"`switch_step` must be a non-negative integer (the step from which `low_temperature` "
                             f"applies), got {self.switch_step!r}.")

    @classmethod
    def halfway(cls, max_steps: int, high_temperature: float = 5.0, low_temperature: float = 1.0) -> "CooldownSchedule":
        """The paper's setting: switch after half of ``max_steps``."""
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}.")
        return cls(high_temperature, low_temperature, switch_step=max_steps // 2)

    def temperature_at(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"`step` must be >= 0, got {step}.")
        return self.high_temperature if step < self.switch_step else self.low_temperature

    def shares_at(self, step: int, sizes: Sequence[float] | torch.Tensor) -> torch.Tensor:
        return temperature_shares(sizes, self.temperature_at(step))


# ------------------------------------------------------------------------------------------ share-based mixtures


def _normalized_shares(shares: Sequence[float], k: int) -> np.ndarray:
    shares = np.asarray(shares, dtype=np.float64)
    if shares.shape != (k,):
        raise ValueError(f"Need one share per dataset ({k}), got {shares.tolist()}.")
    if not np.isfinite(shares).all() or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f"Mixture weights must be finite, non-negative and not all zero, got {shares.tolist()}.")
    return shares / shares.sum()


def _apportion(shares: np.ndarray, total: int) -> list[int]:
    """Integer counts summing to ``total`` closest to ``shares * total`` (largest remainder; ties: lower index)."""
    exact = shares * total
    counts = np.floor(exact + 1e-9).astype(np.int64)
    remainder = exact - counts
    for i in np.argsort(-remainder, kind="stable")[: total - int(counts.sum())]:
        counts[i] += 1
    return counts.tolist()


def mixture_counts(sizes: Sequence[int], shares: Sequence[float], policy: str, total_size: int | None = None
                   ) -> list[int]:
    """How many rows to draw from each dataset so that dataset i makes up share s_i of the mixture.

    Shares are normalised to sum to 1. With N the mixture size, count_i = s_i·N rounded by largest remainder, so the
    counts sum to N exactly and each is within 1 row of s_i·N.

    - ``cap``: no row is repeated. N = ⌊min_i n_i / s_i⌋ (the largest size the smallest share-relative source
      allows), or ``total_size`` if smaller; larger ``total_size`` is an error.
    - ``upsample``: N = ⌈max_i n_i / s_i⌉ (every row of every source used at least once), or ``total_size``;
      sources with count_i > n_i are repeated (see `mixture_indices`).
    """
    if policy not in POLICIES:
        raise ValueError(f"Unknown mixture policy {policy!r}; valid: {', '.join(POLICIES)}.")
    sizes = np.asarray(sizes, dtype=np.int64)
    shares = _normalized_shares(shares, len(sizes))
    used = shares > 0
    empty = [i for i in np.flatnonzero(used) if sizes[i] == 0]
    if empty:
        raise ValueError(f"Dataset(s) {empty} are empty but have a positive mixture weight.")
    ratios = sizes[used] / shares[used]
    if total_size is not None and (isinstance(total_size, bool) or not isinstance(total_size, int) or total_size < 1):
        raise ValueError(f"`total_size` must be a positive integer, got {total_size!r}.")
    if policy == "cap":
        capacity = int(np.floor(ratios.min() + 1e-9))
        if total_size is not None and total_size > capacity:
            raise ValueError(f"policy `cap` allows at most {capacity} rows at these shares without repeating rows "
                             f"(sizes {sizes.tolist()}); lower `total_size` or use policy `upsample`.")
        total = capacity if total_size is None else total_size
    else:
        total = int(np.ceil(ratios.max() - 1e-9)) if total_size is None else total_size
    counts = _apportion(shares, total)
    assert policy == "upsample" or all(c <= n for c, n in zip(counts, sizes))
    return counts


def mixture_indices(size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` row indices into a dataset of ``size`` rows.

    ``count <= size``: a uniformly random subset, no repeats. ``count > size``: drawn with replacement but stratified:
    every row ⌊count/size⌋ times plus a random subset of ``count mod size`` rows once more, so repeat counts differ
    by at most 1 (i.i.d. draws would leave some rows out and repeat others many times).
    """
    if count <= size:
        return rng.permutation(size)[:count]
    repeats, extra = divmod(count, size)
    return np.concatenate([np.tile(np.arange(size), repeats), rng.permutation(size)[:extra]])


def build_share_mixture(
    datasets: Sequence["Dataset"],
    shares: Sequence[float],
    *,
    policy: str,
    seed: int,
    total_size: int | None = None,
    domains: Sequence[str] | None = None,
    domain_column: str = "domain",
) -> "Dataset":
    """Mix in-memory datasets so that dataset i makes up share s_i of the rows (see `mixture_counts`), shuffled.

    ``domains`` labels each dataset's rows in ``domain_column`` (added, or overwritten); ``None`` keeps the rows'
    own column. Deterministic in ``seed``.
    """
    if domains is not None and len(domains) != len(datasets):
        raise ValueError(f"{len(domains)} domain labels for {len(datasets)} datasets.")
    counts = mixture_counts([len(d) for d in datasets], shares, policy, total_size)
    rng = np.random.default_rng(seed)
    parts = []
    for i, (dataset, count) in enumerate(zip(datasets, counts)):
        if count == 0:
            continue
        part = dataset.select(mixture_indices(len(dataset), count, rng))
        if domains is not None:
            if domain_column in part.column_names:
                part = part.remove_columns(domain_column)
            part = part.add_column(domain_column, [domains[i]] * len(part))
        parts.append(part)
    return _concatenate(parts).shuffle(seed=seed)


def _concatenate(parts: Sequence["Dataset"]) -> "Dataset":
    from datasets import concatenate_datasets

    columns = [sorted(p.column_names) for p in parts]
    if any(c != columns[0] for c in columns):
        raise ValueError(f"The mixture's datasets have different columns {columns}; select common ones with "
                         "`columns:` on each dataset.")
    try:
        return concatenate_datasets(list(parts))
    except ValueError as error:  # same names, different feature types
        raise ValueError(f"The mixture's datasets cannot be concatenated ({error}); make their columns agree "
                         "(`columns:` on each dataset selects the common ones).") from error


# ------------------------------------------------------------------------------------------------------ loading


def _load_source_split(source: "MixtureSourceConfig", split: str, fmt: str, domain_column: str,
                       limit_per_domain: int | None = None) -> "Dataset":
    if source.path == TASK_SUITE:
        return load_task_suite(split, fmt, domains=source.domains, limit_per_domain=limit_per_domain)
    dataset = load_source(source.path, split=split, name=source.name, data_dir=source.data_dir,
                          data_files=source.data_files)
    if source.columns is not None:
        dataset = dataset.select_columns(source.columns)
    if source.domains is not None:
        if domain_column not in dataset.column_names:
            raise ValueError(f"`domains` filters rows on the `{domain_column}` column, which {source.path!r} does "
                             f"not have (columns: {dataset.column_names}).")
        wanted = set(source.domains)
        dataset = dataset.filter(lambda row: row[domain_column] in wanted)
    return dataset


def _label(source: "MixtureSourceConfig", dataset: "Dataset", domain_column: str) -> "Dataset":
    """Give every row a domain: the source's `domain`, else its own column, else the source's path."""
    from pathlib import Path

    label = source.domain
    if label is None and domain_column in dataset.column_names:
        return dataset
    label = label or Path(source.path.rstrip("/")).stem or source.path
    if domain_column in dataset.column_names:
        dataset = dataset.remove_columns(domain_column)
    return dataset.add_column(domain_column, [label] * len(dataset))


def load_share_mixture(config: "ShareMixtureConfig", *, fmt: str = "preference", train_split: str = "train",
                       test_split: str = "test", eval_limit_per_domain: int | None = None) -> "DatasetDict":
    """Load a recipe's `share_mixture:` section into ``{train_split: mixture, test_split: held-out}``.

    The training split mixes the sources at their shares (``weight``, or ``temperature`` sampling over the source
    sizes) under ``policy`` and ``seed``. The held-out split is every source's ``test_split`` (the task suite's
    ``test`` by default) concatenated without resampling, so per-domain evaluation sees complete test sets; it is
    absent when no source has one. Every row carries a ``domain`` column.
    """
    from datasets import DatasetDict

    column = config.domain_column
    train_parts = [_label(s, _load_source_split(s, s.split, fmt, column), column) for s in config.datasets]
    sizes = [len(part) for part in train_parts]
    if config.temperature is not None:
        shares = temperature_shares(sizes, config.temperature).tolist()
    else:
        shares = [s.weight for s in config.datasets]
    mixture = build_share_mixture(train_parts, shares, policy=config.policy, seed=config.seed,
                                  total_size=config.total_size)
    splits = {train_split: mixture}
    test_parts = []
    for source in config.datasets:
        held_out = source.test_split or ("test" if source.path == TASK_SUITE else None)
        if held_out is not None:
            test_parts.append(_label(source, _load_source_split(source, held_out, fmt, column, eval_limit_per_domain),
                                     column))
    if test_parts:
        splits[test_split] = _concatenate(test_parts)
    return DatasetDict(splits)


def realized_shares(dataset: "Dataset", domain_column: str = "domain") -> dict[str, float]:
    """Fraction of rows per value of ``domain_column``: what a mixture actually contains."""
    values, counts = np.unique(np.asarray(dataset[domain_column]), return_counts=True)
    return {str(v): float(c) / len(dataset) for v, c in zip(values, counts)}


# ------------------------------------------------------------------------------- the alignment-handbook's schema

def load_handbook_mixture(config: "HandbookMixtureConfig") -> "DatasetDict":
    """A handbook `dataset_mixture:` section, loaded exactly as the alignment-handbook's `get_dataset` does
    (src/alignment/data.py; open-r1 has the same code).

    For each entry: load ``split`` of ``id`` (config ``config``), keep ``columns``, and if ``weight`` is set keep the
    first ⌊n · weight⌋ rows after ``shuffle(seed)``; concatenate in order, ``shuffle(seed)``, then
    ``train_test_split(test_size=test_split_size, seed=seed)`` (``{train, test}``) if ``test_split_size`` is set,
    else ``{train}`` alone.

    Paper vs code: none; handbook vs this toolkit: ``weight`` is the fraction of that dataset kept, not normalised,
    so the final shares depend on the sizes, and a weight > 1 cannot upsample (`select` fails on missing rows; here
    that is a clear error). Sources are read by `alignment.data_sources.load_source`, so ``id`` may also be a
    local file or directory.
    """
    from datasets import DatasetDict

    parts = []
    for i, source in enumerate(config.datasets):
        dataset = load_source(source.id, split=source.split, name=source.config)
        if source.columns is not None:
            dataset = dataset.select_columns(source.columns)
        if source.weight is not None:
            if not (isinstance(source.weight, (int, float)) and 0 <= source.weight <= 1):
                raise ValueError(f"dataset_mixture.datasets[{i}] ({source.id}): `weight` is the fraction of the "
                                 f"dataset kept, in [0, 1]; got {source.weight!r}. To upsample, use `share_mixture` "
                                 "with `policy: upsample`.")
            dataset = dataset.shuffle(seed=config.seed).select(range(int(len(dataset) * source.weight)))
        parts.append(dataset)
    combined = _concatenate(parts).shuffle(seed=config.seed)
    if config.test_split_size is not None:
        return combined.train_test_split(test_size=config.test_split_size, seed=config.seed)
    return DatasetDict({"train": combined})
