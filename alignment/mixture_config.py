"""The two mixture sections of a recipe as dataclasses: `share_mixture:` (this toolkit's share-based mixture) and
`dataset_mixture:` (the alignment-handbook / open-r1 schema), and `parse_mixture_sections` that builds them.

Only the recipe side: the recipe dataclasses (`alignment.configs`) parse sections with it at start-up, and
`alignment.mixtures` loads the parsed sections. Imports nothing of this package but `alignment.recipe_values`, so
both can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .recipe_values import parse_mapping_text

# The `policy` values of a `share_mixture` (`alignment.mixtures.mixture_counts` implements them).
POLICIES = ("cap", "upsample")


@dataclass
class MixtureSourceConfig:
    """One dataset of a `share_mixture`: where to load it from and its share of the final mixture."""

    path: str = field(
        metadata={
            "help": "A Hub dataset id, a local data file (.jsonl/.json/.csv/.parquet), a directory written by "
            "`save_to_disk`, or `task-suite` for the embedded task suite."
        }
    )
    weight: float | None = field(
        default=None,
        metadata={
            "help": "This dataset's share of the final mixture (weights are normalised to sum to 1). Required unless "
            "the mixture sets `temperature`."
        },
    )
    name: str | None = field(default=None, metadata={"help": "Dataset configuration name (`load_dataset(name=)`)."})
    data_dir: str | None = field(default=None, metadata={"help": "`data_dir` passed to `load_dataset`."})
    data_files: str | list[str] | dict[str, str] | None = field(
        default=None, metadata={"help": "`data_files` passed to `load_dataset`."}
    )
    split: str = field(default="train", metadata={"help": "The split mixed into the training data."})
    test_split: str | None = field(
        default=None,
        metadata={
            "help": "A split added, whole and unresampled, to the held-out split (default: `test` for `task-suite`, "
            "none otherwise)."
        },
    )
    columns: list[str] | None = field(
        default=None, metadata={"help": "Keep only these columns (the datasets of a mixture must share columns)."}
    )
    domains: list[str] | None = field(
        default=None,
        metadata={
            "help": "Keep only rows whose `domain` column is one of these (for `task-suite`: its domains, e.g. "
            "`[addition]`)."
        },
    )
    domain: str | None = field(
        default=None,
        metadata={
            "help": "Domain label written into every row's `domain` column. Default: the rows' own `domain` column if "
            "they have one, else the file or dataset name."
        },
    )

    def __post_init__(self):
        if self.weight is not None and not (isinstance(self.weight, (int, float)) and self.weight >= 0):
            raise ValueError(f"share_mixture: `weight` of {self.path!r} must be a share >= 0, got {self.weight!r}.")


@dataclass
class ShareMixtureConfig:
    """A `share_mixture:` recipe section: datasets mixed at given shares of the final training data.

    ```yaml
    share_mixture:
      datasets:
        - {path: task-suite, domains: [addition], weight: 0.7}
        - {path: data/counting.jsonl, domain: counting, weight: 0.3}
      policy: upsample
      seed: 0
    ```
    """

    datasets: list[MixtureSourceConfig] = field(
        default_factory=list, metadata={"help": "The datasets to mix (each a `MixtureSourceConfig` mapping)."}
    )
    policy: str = field(
        default="cap",
        metadata={
            "help": "What to do when a source is too small for its share. `cap` (default, as TRL): never repeat a "
            "row; the mixture is as large as the scarcest source (relative to its share) allows. `upsample`: use "
            "every row of every source and repeat the rows of small sources (each repeated floor or ceil of "
            "count/size times)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the row draws and of the final shuffle."})
    total_size: int | None = field(
        default=None,
        metadata={
            "help": "Rows in the mixture. Default: the largest size without repeats (`cap`) or the smallest size "
            "that uses every row (`upsample`)."
        },
    )
    temperature: float | None = field(
        default=None,
        metadata={
            "help": "Shares from temperature sampling over the source sizes n_i, p_i ∝ n_i^(1/T) (1: proportional, "
            "large: uniform), instead of per-dataset weights."
        },
    )
    domain_column: str = field(default="domain", metadata={"help": "Column holding each row's domain label."})

    def __post_init__(self):
        self.datasets = [MixtureSourceConfig(**d) if isinstance(d, dict) else d for d in self.datasets]
        if not self.datasets:
            raise ValueError("share_mixture: list at least one dataset under `datasets`.")
        if self.policy not in POLICIES:
            raise ValueError(f"share_mixture: unknown `policy` {self.policy!r}; valid: {', '.join(POLICIES)}.")
        weights = [d.weight for d in self.datasets]
        if self.temperature is not None:
            if any(w is not None for w in weights):
                raise ValueError("share_mixture: set either `temperature` or per-dataset `weight`s, not both.")
            if not self.temperature > 0:
                raise ValueError(f"share_mixture: `temperature` must be > 0, got {self.temperature!r}.")
        elif any(w is None for w in weights):
            missing = [d.path for d in self.datasets if d.weight is None]
            raise ValueError(f"share_mixture: give every dataset a `weight` (missing for {missing}), or set a "
                             "`temperature`.")
        elif sum(weights) <= 0:
            raise ValueError("share_mixture: the weights must not all be zero.")


@dataclass
class HandbookMixtureSource:
    """One dataset of a handbook `dataset_mixture` (the alignment-handbook's and open-r1's `DatasetConfig`)."""

    id: str = field(metadata={"help": "A Hub dataset id or a local path (file, directory, `save_to_disk` output)."})
    config: str | None = field(default=None, metadata={"help": "Dataset configuration name (`load_dataset(name=)`)."})
    split: str = field(default="train", metadata={"help": "The split to take from this dataset."})
    columns: list[str] | None = field(default=None, metadata={"help": "Keep only these columns."})
    weight: float | None = field(
        default=None,
        metadata={
            "help": "Fraction of this dataset's rows kept (after a seeded shuffle): 0.5 keeps half. Not a share of "
            "the mixture and not normalised. Unset: all rows."
        },
    )


@dataclass
class HandbookMixtureConfig:
    """A `dataset_mixture:` recipe section in the alignment-handbook / open-r1 schema, loaded with their semantics
    (`alignment.mixtures.load_handbook_mixture`).

    ```yaml
    dataset_mixture:
      datasets:
        - {id: HuggingFaceH4/ultrafeedback_binarized, split: train_prefs, columns: [chosen, rejected], weight: 1.0}
      seed: 0
      test_split_size: 2000
    ```
    """

    datasets: list[HandbookMixtureSource] = field(
        default_factory=list, metadata={"help": "The datasets, each `{id, config, split, columns, weight}`."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the per-dataset subsampling, the shuffle and the split."})
    test_split_size: float | None = field(
        default=None,
        metadata={
            "help": "Hold out this many rows (>= 1) or this fraction (< 1) of the mixture as the `test` split "
            "(`Dataset.train_test_split`). Unset: only a `train` split."
        },
    )


# Keys only this toolkit's share-based mixture has: a `dataset_mixture` using them was written for `share_mixture`.
_SHARE_ONLY_KEYS = ("policy", "temperature", "total_size", "domain_column")


def parse_mixture_sections(*, share_mixture, dataset_mixture):
    """The recipe's ``share_mixture`` (ours) and ``dataset_mixture`` (handbook schema) as config objects.

    Either may be a mapping, a JSON string (command line) or already parsed. A ``dataset_mixture`` written in our
    share schema (entries with ``path``, or ``policy``/``temperature``/``total_size``) is an error that says to rename
    it: it was this toolkit's name for `share_mixture` before the handbook's schema was accepted, and its weights
    mean something else there (share of the mixture vs fraction of the dataset kept).
    """
    share_mixture = parse_mapping_text(share_mixture, field_name="share_mixture")
    dataset_mixture = parse_mapping_text(dataset_mixture, field_name="dataset_mixture")
    if isinstance(share_mixture, dict):
        share_mixture = ShareMixtureConfig(**share_mixture)
    if isinstance(dataset_mixture, dict):
        entries = dataset_mixture.get("datasets") or []
        ours = [k for k in _SHARE_ONLY_KEYS if k in dataset_mixture]
        if ours or any(isinstance(e, dict) and "path" in e and "id" not in e for e in entries):
            raise ValueError(
                "`dataset_mixture` is the alignment-handbook / open-r1 schema (entries `{id, config, split, columns, "
                "weight}`, weight = fraction of the dataset kept). This one is written in this toolkit's share-based "
                f"schema ({'keys ' + str(ours) if ours else 'entries with `path`'}): rename the section to "
                "`share_mixture` (see docs/mixtures.md)."
            )
        unknown = sorted(set(dataset_mixture) - {"datasets", "seed", "test_split_size"})
        if unknown:
            raise ValueError(f"dataset_mixture: unknown key(s) {unknown}; the handbook schema has `datasets`, `seed` "
                             "and `test_split_size` (this toolkit's share-based mixture is `share_mixture`).")
        sources = []
        for i, entry in enumerate(entries):
            allowed = {"id", "config", "split", "columns", "weight"}
            if not isinstance(entry, dict) or "id" not in entry or set(entry) - allowed:
                raise ValueError(f"dataset_mixture.datasets[{i}] must be a mapping with `id` and optionally "
                                 f"`config`, `split`, `columns`, `weight`; got {entry!r}.")
            sources.append(HandbookMixtureSource(**entry))
        if not sources:
            raise ValueError("dataset_mixture: list at least one dataset under `datasets`.")
        dataset_mixture = HandbookMixtureConfig(**{**dataset_mixture, "datasets": sources})
    return share_mixture, dataset_mixture
