"""`PreferenceTrainer`'s use of the on-disk reference log-prob cache (`alignment.ref_cache`), as a mixin.

With ``reference_cache_dir`` set, the trainer takes TRL's own "precomputed reference" path
(`DPOTrainer(precompute_ref_log_probs=True)`), under which TRL neither loads nor copies a reference model: the
reference is the policy as it is before training (or the policy with its adapters off, under PEFT; or an explicitly
passed ``ref_model``). TRL calls `_precompute_ref_logps` once per dataset at the end of its ``__init__``; here that
looks the dataset up in the cache and, on a miss, computes the per-token reference log-probs of every row (each rank
its share, by the same distributed split as training) and stores them. Either way the dataset comes back with a
row-id column (`ROW_COLUMN`) that the collator carries into every batch, and the reference log-probs of a batch are
the cached values scattered into its completion positions: no reference forward during training or evaluation.

Rejected at start-up with the cache on: losses that need more of the reference than its per-token log-probs
(`PreferenceLossSpec.requires_reference_outputs`, e.g. SparsePO's full-vocabulary KL), ``sync_ref_model`` (the
reference changes during training), iterable and vision datasets (no stable row ids / TRL does not tokenize them).

Limits: the cache directory must be visible to every rank (one node, or a shared filesystem): ranks write their
shards there and all read the whole entry. A dataset passed to `evaluate()` after training started is refused by TRL
(full fine-tuning: the policy is no longer the reference), even when its entry exists.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..ref_cache import (
    CacheKey,
    ProcessGroup,
    ReferenceLogpsCache,
    entry_dir,
    hash_dataset,
    hash_state_dict,
    hash_text,
    hash_tokenizer,
    load_or_build,
)
from .preference_batch import completion_labels, model_inputs
from .reference_logps import reference_token_logps

logger = logging.getLogger(__name__)

ROW_COLUMN = "ref_cache_row"
# Row ids carry the dataset they index (train, each eval set) in their high bits: id = slot * ROW_STRIDE + row.
ROW_STRIDE = 1 << 40


@dataclass
class ReferenceRowCollator:
    """Wraps a preference collator and passes the row-id column through as a ``[B]`` int64 tensor."""

    base: Callable[[list[dict[str, Any]]], dict[str, Any]]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(examples)
        if ROW_COLUMN in examples[0]:
            batch[ROW_COLUMN] = torch.tensor([int(example[ROW_COLUMN]) for example in examples], dtype=torch.int64)
        return batch


def check_reference_cache_supported(args, loss_specs, datasets: dict[str, Any]) -> None:
    """Errors, before anything is loaded, for settings the reference cache cannot serve."""
    from datasets import IterableDataset

    needs_reference = [spec.name for spec in loss_specs if getattr(spec, "requires_reference_outputs", ())]
    if needs_reference:
        raise ValueError(
            f"loss_type {needs_reference} needs the reference model's full outputs (vocabulary distribution or hidden "
            "states), which `reference_cache_dir` does not store (only per-token log-probs). Unset "
            "`reference_cache_dir` for this loss."
        )
    if getattr(args, "sync_ref_model", False):
        raise ValueError("`sync_ref_model=True` updates the reference during training, so its log-probs cannot be "
                         "cached; unset `reference_cache_dir` or `sync_ref_model`.")
    for name, dataset in datasets.items():
        if isinstance(dataset, IterableDataset):
            raise ValueError(f"`reference_cache_dir` needs a map-style `Dataset` (row ids), but the {name} dataset is an "
                             "`IterableDataset`; load it without `streaming=True` or unset `reference_cache_dir`.")
        if dataset is not None and {"image", "images"} & set(dataset.column_names):
            raise ValueError(f"`reference_cache_dir` does not support vision datasets (the {name} dataset has image "
                             "columns); unset it.")


class ReferenceCacheMixin:
    """Reads per-token reference log-probs from `alignment.ref_cache` when ``args.reference_cache_dir`` is set.

    Place before `trl.DPOTrainer` in the bases, after `TrainerHooks` (which keeps its row-id column in the batches).
    After ``__init__``, `reference_cache_report` lists, per dataset, the entry used and whether this run built it.
    """

    def __init__(self, *posargs, **kwargs):
        args = kwargs.get("args", posargs[2] if len(posargs) > 2 else None)
        self._reference_caches: list[ReferenceLogpsCache] | None = None
        self.reference_cache_report: list[dict[str, Any]] = []
        if not getattr(args, "reference_cache_dir", None):
            super().__init__(*posargs, **kwargs)
            return
        from ..losses import get_preference_loss

        eval_dataset = kwargs.get("eval_dataset")
        datasets = {"train": kwargs.get("train_dataset")}
        datasets.update(eval_dataset if isinstance(eval_dataset, dict) else {"eval": eval_dataset})
        check_reference_cache_supported(args, [get_preference_loss(name) for name in args.loss_type], datasets)
        self._reference_caches = []
        # TRL's precompute path: no reference model is loaded, and `_precompute_ref_logps` (below) is called per
        # dataset. The flag is the user's `args` object, so it is put back; TRL keeps its own copy of it.
        args.precompute_ref_log_probs = True
        try:
            super().__init__(*posargs, **kwargs)
        finally:
            args.precompute_ref_log_probs = False
        self.data_collator = ReferenceRowCollator(self.data_collator)
        self.kept_columns.append(ROW_COLUMN)

    @property
    def reference_cache_enabled(self) -> bool:
        return self._reference_caches is not None

    # ------------------------------------------------------------------ hooks into TRL / Trainer

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        """TRL's per-dataset precompute hook: load (or build, then load) the dataset's cache entry."""
        if not self.reference_cache_enabled:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        if ROW_COLUMN in dataset.column_names:  # a dataset this trainer returned before, passed back in
            dataset = dataset.remove_columns(ROW_COLUMN)
        group = self._reference_cache_group()
        key = group.broadcast(self._reference_cache_key(dataset))  # one key for all ranks, whatever they hashed
        entry = str(entry_dir(self.args.reference_cache_dir, key))
        # The same data again (e.g. `evaluate(dataset)` called repeatedly) reuses the values already in memory.
        slot = next((i for i, report in enumerate(self.reference_cache_report) if report["entry"] == entry),
                    len(self._reference_caches))
        indexed = dataset.add_column(ROW_COLUMN, [slot * ROW_STRIDE + i for i in range(len(dataset))])
        if slot < len(self._reference_caches):
            return indexed
        values, built = load_or_build(
            self.args.reference_cache_dir, key,
            lambda: self._compute_reference_shard(indexed, name, batch_size),
            num_rows=len(dataset), group=group,
        )
        self._reference_caches.append(values)
        self.reference_cache_report.append({"dataset": name, "entry": entry, "built": built, "rows": len(values)})
        logger.info("Reference log-probs of the %s dataset (%d rows): %s %s", name, len(values),
                    "built into" if built else "read from", entry)
        return indexed

    # ------------------------------------------------------------------ key and build
    def _reference_cache_group(self) -> ProcessGroup:
        from accelerate.utils import broadcast_object_list, gather_object

        accelerator = self.accelerator
        if accelerator.num_processes == 1:
            return ProcessGroup()
        return ProcessGroup(
            rank=accelerator.process_index, world_size=accelerator.num_processes,
            barrier=accelerator.wait_for_everyone,
            broadcast=lambda obj: broadcast_object_list([obj], from_process=0)[0],
            gather=lambda obj: gather_object([obj]),
        )

    def _reference_module(self):
        return self.ref_model if self.ref_model is not None else self.model

    def _reference_cache_key(self, dataset) -> CacheKey:
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        template = getattr(self.processing_class, "chat_template", None) or getattr(tokenizer, "chat_template", None)
        reference = self._reference_module()
        # TRL hashes the reference weights (all state-dict bytes) on its precompute path anyway; reuse that value
        # rather than paying the pass twice. Under PEFT it includes the (seeded) adapter weights: stricter than needed.
        weights = getattr(self, "_precompute_model_hash", None) or hash_state_dict(reference)
        config = getattr(reference, "config", None)
        compute_dtype = (f"{next(reference.parameters()).dtype}|mp={self.accelerator.mixed_precision}"
                         f"|attn={getattr(config, '_attn_implementation', None)}")
        return CacheKey(
            reference=weights, tokenizer=hash_tokenizer(tokenizer), chat_template=hash_text(template),
            dataset=hash_dataset(dataset), max_length=self.args.max_length,
            truncation_mode=str(self.args.truncation_mode), compute_dtype=compute_dtype,
        )

    def _compute_reference_shard(self, indexed, name: str, batch_size: int) -> ReferenceLogpsCache:
        """Per-token reference log-probs of this rank's share of `indexed` (the training distributed split)."""
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        loader = DataLoader(indexed, batch_size=batch_size, collate_fn=ReferenceRowCollator(self.data_collator),
                            shuffle=False, num_workers=self.args.dataloader_num_workers,
                            pin_memory=self.args.dataloader_pin_memory)
        loader = self.accelerator.prepare(loader)
        if self.ref_model is None and self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            if self._precompute_engine is None:  # TRL's attribute: one inference engine, reused
                self._precompute_engine = prepare_deepspeed(self.model, self.accelerator)
            model = self._precompute_engine
        else:
            model = self._reference_module()
        rows, chosen, rejected = [], [], []
        was_training = model.training
        model.eval()  # the reference is run without dropout, as TRL's prepared reference model is
        try:
            for batch in tqdm(loader, desc=f"Caching reference log-probs of the {name} dataset",
                              disable=bool(os.environ.get("TQDM_DISABLE", ""))):
                ids = (batch.pop(ROW_COLUMN) % ROW_STRIDE).tolist()
                logps, token_mask = self._reference_cache_forward(model, batch)
                pairs = len(ids)
                for j, row in enumerate(ids):
                    rows.append(row)
                    chosen.append(logps[j][token_mask[j]])
                    rejected.append(logps[pairs + j][token_mask[pairs + j]])
        finally:
            model.train(was_training)
        return ReferenceLogpsCache.from_rows(rows, chosen, rejected)

    def _reference_cache_forward(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``([2B, T] log-probs, [2B, T] bool token mask)`` of one collated batch under the reference, on CPU."""
        labels = completion_labels(batch)
        with self.compute_loss_context_manager():
            log_probs = reference_token_logps(
                self.model, self.ref_model, model_inputs(batch), labels, accelerator=self.accelerator,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs, module=model,
            )
        token_mask = batch["completion_mask"][:, 1:].bool()
        # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens.
        return log_probs[:, -token_mask.size(1):].float().cpu(), token_mask.cpu()

    # ------------------------------------------------------------------ training-time lookup
    def _cached_reference_token_logps(self, labels: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """``[2B, T-1]`` reference log-probs of the batch whose ``[B]`` cache row ids (`ROW_COLUMN`) are ``rows``, from
        the cache (aligned like the fused head's)."""
        if rows is None:
            raise RuntimeError(
                f"The batch has no `{ROW_COLUMN}` column, so its reference log-probs cannot be read from the cache. "
                "Batches must come from this trainer's dataloaders (its collator adds the column)."
            )
        slots = torch.unique(rows // ROW_STRIDE).tolist()
        if len(slots) != 1:
            raise RuntimeError(f"A batch mixes rows of several datasets (slots {slots}).")
        token_mask = labels[:, 1:] != -100
        return self._reference_caches[slots[0]].scatter((rows % ROW_STRIDE).cpu(), token_mask)
