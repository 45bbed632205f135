"""An on-disk cache of per-token reference log-probs that outlives a run.

DPO-style losses compare the policy with a frozen reference model. The reference's log-probs of the training
completions depend only on the reference weights, the tokenized data and the truncation settings, so they can be
computed once and reused by every later run with the same inputs; such a run never loads the reference model.

What is stored: for every dataset row, the reference log-prob ``log π_ref(y_t | x, y_<t)`` of each completion token
of the chosen and of the rejected response, in order: the values at the positions where the (shifted) completion mask
of TRL's preference collator is 1. Per-token values, not sums, so token-level losses and token weightings can use them.

Key (`CacheKey`): a digest over the reference weights, the tokenizer (its serialized vocabulary, merges, added and
special tokens), the chat template, the content of the tokenized dataset, ``max_length`` / ``truncation_mode``, the
reference compute dtype (parameter dtype, mixed precision, attention implementation) and `FORMAT_VERSION`. Any change
gives another digest, hence another entry: a miss, and a rebuild.

Layout of one entry, ``<cache_dir>/<digest>/``::

    shard-00000-of-00002.safetensors   one per rank that built it; tensors (N rows of that shard):
        rows              [N]      int64   row index in the tokenized dataset
        chosen_offsets    [N + 1]  int64   row i's chosen values are chosen_logps[chosen_offsets[i]:chosen_offsets[i+1]]
        chosen_logps      [sum]    float32
        rejected_offsets  [N + 1]  int64
        rejected_logps    [sum]    float32
    meta.json                          written LAST: key, row count, and each shard's size and sha256

An entry without ``meta.json`` is incomplete (a build died); one whose shards do not match the checksums, sizes or
row counts in ``meta.json``, or whose rows are not exactly ``0 .. n-1``, is corrupted. Either is rebuilt with a
warning, never used. Builds write into a temporary directory that is renamed into place only once complete, under a
file lock (``<cache_dir>/<digest>.lock``) so that two runs starting at once build it once and never see each other's
partial files. Reading a complete entry takes no lock, so a read-only cache directory serves its valid entries.
Stored values are checked when read: a non-finite log-prob (NaN/inf) makes the entry corrupted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .modeling.models import file_sha256

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_NAME = "meta.json"
_TENSOR_NAMES = ("rows", "chosen_offsets", "chosen_logps", "rejected_offsets", "rejected_logps")


class CacheInvalid(Exception):
    """An entry that must not be used (missing, incomplete, corrupted, or for another key); the message says why."""


# ---------------------------------------------------------------------------------------------------------- key
def _sha256(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))  # length-prefixed: ("ab", "c") and ("a", "bc") differ
        h.update(data)
    return h.hexdigest()


def hash_state_dict(module: torch.nn.Module, exclude: Callable[[str], bool] | None = None) -> str:
    """sha256 over every state-dict tensor of `module` (name, dtype, shape and bytes), in name order.

    Cost: one pass over the weights (CPU copy of each tensor); about 1 s per GB on a laptop core. `exclude(name)`
    skips tensors (e.g. PEFT adapter weights, which are not part of the reference).
    """
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if exclude is not None and exclude(name):
            continue
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


def hash_tokenizer(tokenizer: Any) -> str:
    """sha256 of a tokenizer's full serialization: vocabulary, merges, normalizer, added and special tokens.

    Fast tokenizers serialize with `backend_tokenizer.to_str()`; others fall back to the sorted vocabulary. The chat
    template is hashed separately (`CacheKey.chat_template`).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    special = json.dumps(
        {
            "special_tokens": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
            "added": sorted((str(k), int(v)) for k, v in tokenizer.get_added_vocab().items()),
            "class": type(tokenizer).__name__,
        },
        sort_keys=True,
    )
    return _sha256(body, special)


def hash_text(text: str | None) -> str:
    return _sha256("none" if text is None else "text", text or "")


def hash_dataset(dataset: Any, exclude_columns: Sequence[str] = ()) -> str:
    """sha256 of a `datasets.Dataset`'s content (features and rows, in order), read as Arrow record batches.

    Why not `Dataset._fingerprint`: for in-memory datasets (`from_list`, `from_dict`, most map results of them) it is
    random, so two runs on identical data would never share a cache; and a fingerprint that is deterministic only says
    how a dataset was made, not what it holds. Hashing the content costs one pass over the data (~0.5 s per 100 MB).
    """
    import pyarrow as pa

    columns = [c for c in dataset.column_names if c not in set(exclude_columns)]
    data = dataset.select_columns(columns) if len(columns) != len(dataset.column_names) else dataset
    h = hashlib.sha256()
    h.update(json.dumps(data.features.to_dict(), sort_keys=True, default=str).encode())
    h.update(str(len(data)).encode())
    for batch in data.with_format("arrow").iter(batch_size=1024):
        # One chunk per batch (a selection yields one chunk per taken run of rows) and IPC serialization, which
        # writes sliced arrays compactly: equal rows give equal bytes however the table was built.
        batch = batch.combine_chunks()
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, batch.schema.remove_metadata()) as writer:
            writer.write_table(batch.replace_schema_metadata(None))
        h.update(sink.getvalue())
    return h.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything the cached values depend on. Two runs share an entry iff their keys are equal.

    Attributes:
        reference: hash of the reference weights (e.g. `hash_state_dict`).
        tokenizer: `hash_tokenizer` of the tokenizer.
        chat_template: `hash_text` of the chat template string (or of None).
        dataset: `hash_dataset` of the tokenized dataset (its rows define the row indices).
        max_length: TRL's `max_length` (None: no truncation).
        truncation_mode: TRL's `truncation_mode` (`keep_start` / `keep_end`).
        compute_dtype: how the reference was run, e.g. ``"float32|mp=no|attn=sdpa"``.
        format_version: `FORMAT_VERSION` of the on-disk layout.
    """

    reference: str
    tokenizer: str
    chat_template: str
    dataset: str
    max_length: int | None
    truncation_mode: str
    compute_dtype: str
    format_version: int = FORMAT_VERSION

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def digest(self) -> str:
        """32 hex characters naming the entry directory."""
        return _sha256(json.dumps(self.as_dict(), sort_keys=True))[:32]


# ---------------------------------------------------------------------------------------------------------- values
@dataclass
class ReferenceLogpsCache:
    """Per-token reference log-probs of a set of rows, in flat-tensor-plus-offsets form (see the module docstring).

    `rows` is sorted and unique; `lookup` maps a row index to its position.
    """

    rows: torch.Tensor
    chosen_offsets: torch.Tensor
    chosen_logps: torch.Tensor
    rejected_offsets: torch.Tensor
    rejected_logps: torch.Tensor
    _position: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        n = self.rows.numel()
        for side in ("chosen", "rejected"):
            offsets, values = getattr(self, f"{side}_offsets"), getattr(self, f"{side}_logps")
            if offsets.dim() != 1 or offsets.numel() != n + 1 or int(offsets[0]) != 0:
                raise CacheInvalid(f"`{side}_offsets` must have {n + 1} entries starting at 0, got {offsets.numel()}")
            if bool((offsets[1:] < offsets[:-1]).any()) or int(offsets[-1]) != values.numel():
                raise CacheInvalid(f"`{side}_offsets` are not increasing up to the {values.numel()} stored values")
        if n > 1 and bool((self.rows[1:] <= self.rows[:-1]).any()):
            raise CacheInvalid("`rows` must be sorted and unique")
        self._position = {int(row): i for i, row in enumerate(self.rows.tolist())}

    @classmethod
    def from_rows(cls, rows: Sequence[int], chosen: Sequence[torch.Tensor],
                  rejected: Sequence[torch.Tensor]) -> "ReferenceLogpsCache":
        """Build from per-row value vectors. A row seen twice keeps its first values (distributed samplers repeat a
        few rows to give every rank the same number of batches)."""
        if not len(rows) == len(chosen) == len(rejected):
            raise ValueError(f"{len(rows)} rows but {len(chosen)} chosen and {len(rejected)} rejected value vectors")
        first: dict[int, int] = {}
        for i, row in enumerate(rows):
            first.setdefault(int(row), i)
        order = [first[row] for row in sorted(first)]

        def flat(values):
            parts = [values[i].detach().float().cpu().reshape(-1) for i in order]
            lengths = torch.tensor([0] + [p.numel() for p in parts], dtype=torch.int64)
            return lengths.cumsum(0), (torch.cat(parts) if parts else torch.zeros(0))

        chosen_offsets, chosen_logps = flat(chosen)
        rejected_offsets, rejected_logps = flat(rejected)
        return cls(torch.tensor(sorted(first), dtype=torch.int64), chosen_offsets, chosen_logps, rejected_offsets,
                   rejected_logps)

    @classmethod
    def merge(cls, parts: Sequence["ReferenceLogpsCache"]) -> "ReferenceLogpsCache":
        rows, chosen, rejected = [], [], []
        for part in parts:
            for i, row in enumerate(part.rows.tolist()):
                rows.append(row)
                chosen.append(part.values(i, "chosen"))
                rejected.append(part.values(i, "rejected"))
        return cls.from_rows(rows, chosen, rejected)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).contiguous() for name in _TENSOR_NAMES}

    def __len__(self) -> int:
        return self.rows.numel()

    def values(self, position: int, side: str) -> torch.Tensor:
        offsets, values = getattr(self, f"{side}_offsets"), getattr(self, f"{side}_logps")
        return values[int(offsets[position]):int(offsets[position + 1])]

    def scatter(self, rows: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """The ``[2B, T]`` reference log-probs of a collated batch: rows ``0..B-1`` chosen, ``B..2B-1`` rejected.

        `rows` (``[B]``) are the dataset rows of the pairs; `token_mask` (``[2B, T]``, bool) marks the positions whose
        log-prob is stored (the completion mask shifted by one, as for TRL's fused LM head). Stored values fill those
        positions in order; every other position is 0. A row whose number of stored values differs from its number of
        masked positions raises (the batch was not built with the settings the cache was keyed on).
        """
        batch = rows.numel()
        if token_mask.size(0) != 2 * batch:
            raise ValueError(f"token_mask has {token_mask.size(0)} rows, expected 2 x {batch} (chosen; rejected)")
        missing = [int(row) for row in rows.tolist() if int(row) not in self._position]
        if missing:
            raise KeyError(f"reference cache has no entry for dataset row(s) {missing[:5]}")
        positions = [self._position[int(row)] for row in rows.tolist()]
        parts = [self.values(p, "chosen") for p in positions] + [self.values(p, "rejected") for p in positions]
        expected = token_mask.sum(-1).tolist()
        for i, (part, count) in enumerate(zip(parts, expected)):
            if part.numel() != count:
                side = "chosen" if i < batch else "rejected"
                raise RuntimeError(
                    f"reference cache holds {part.numel()} {side} token log-probs for dataset row "
                    f"{int(rows[i % batch])} but the batch has {count} completion tokens: the cache does not match "
                    "this tokenization/truncation. Delete the entry or check `max_length`/`truncation_mode`."
                )
        out = torch.zeros(token_mask.shape, dtype=torch.float32, device=token_mask.device)
        # Boolean-mask assignment fills positions in row-major order: row by row, left to right, as stored.
        out[token_mask] = torch.cat(parts).to(token_mask.device)
        return out


# ---------------------------------------------------------------------------------------------------------- files
def entry_dir(cache_dir: str | os.PathLike, key: CacheKey) -> Path:
    return Path(cache_dir) / key.digest


def shard_name(rank: int, world_size: int) -> str:
    return f"shard-{rank:05d}-of-{world_size:05d}.safetensors"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_shard(directory: str | os.PathLike, rank: int, world_size: int, values: ReferenceLogpsCache) -> Path:
    """Write one rank's rows as a safetensors shard (atomically: a temp file renamed into place)."""
    from safetensors.torch import save

    path = Path(directory) / shard_name(rank, world_size)
    _atomic_write_bytes(path, save(values.tensors(), metadata={"format_version": str(FORMAT_VERSION)}))
    return path


def finalize_entry(directory: str | os.PathLike, key: CacheKey, world_size: int, num_rows: int) -> dict[str, Any]:
    """Check the `world_size` shards in `directory` together hold rows ``0 .. num_rows-1``, then write ``meta.json``.

    Called once, after every rank wrote its shard. ``meta.json`` is written last: its presence marks the entry
    complete. Raises `CacheInvalid` if the shards are missing rows.
    """
    directory = Path(directory)
    shards, parts = [], []
    for rank in range(world_size):
        path = directory / shard_name(rank, world_size)
        part = _read_shard(path)
        parts.append(part)
        shards.append({"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path),
                       "rows": len(part)})
    covered = torch.unique(torch.cat([part.rows for part in parts])) if parts else torch.zeros(0, dtype=torch.int64)
    if not torch.equal(covered, torch.arange(num_rows)):
        raise CacheInvalid(f"the shards cover {covered.numel()} distinct rows, expected rows 0..{num_rows - 1}")
    meta = {"format_version": FORMAT_VERSION, "key": key.as_dict(), "digest": key.digest, "num_rows": num_rows,
            "world_size": world_size, "shards": shards}
    _atomic_write_bytes(directory / META_NAME, json.dumps(meta, indent=2).encode())
    return meta


def _read_shard(path: Path, data: bytes | None = None) -> ReferenceLogpsCache:
    from safetensors.torch import load

    if data is None:
        if not path.is_file():
            raise CacheInvalid(f"shard {path.name} is missing")
        data = path.read_bytes()
    try:
        tensors = load(data)
    except Exception as error:  # safetensors raises several types on truncated or garbled files
        raise CacheInvalid(f"shard {path.name} is unreadable ({type(error).__name__}: {error})") from None
    absent = [name for name in _TENSOR_NAMES if name not in tensors]
    if absent:
        raise CacheInvalid(f"shard {path.name} lacks tensors {absent}")
    values = ReferenceLogpsCache(**{name: tensors[name] for name in _TENSOR_NAMES})
    for side in ("chosen", "rejected"):
        logps = getattr(values, f"{side}_logps")
        bad = (~torch.isfinite(logps)).nonzero().flatten()
        if bad.numel():
            # The row of the first bad value: offsets[i] <= position < offsets[i + 1].
            position = int(torch.searchsorted(getattr(values, f"{side}_offsets"), bad[:1], right=True)) - 1
            raise CacheInvalid(f"shard {path.name} holds {bad.numel()} non-finite {side} log-probs (NaN/inf; first "
                               f"at dataset row {int(values.rows[position])})")
    return values


# What `finalize_entry` writes for each shard in meta.json; anything else is a damaged (or foreign) file.
_SHARD_RECORD = {"file": str, "bytes": int, "sha256": str, "rows": int}


def _check_shard_records(shards: Any) -> None:
    """`CacheInvalid` unless `shards` is a list of `_SHARD_RECORD` mappings naming files inside the entry.

    A meta.json that parses as JSON but lacks a field (e.g. ``"shards": [{}]``) is damaged like any other entry and
    must be rebuilt, not crash the run with a KeyError.
    """
    if not isinstance(shards, list):
        raise CacheInvalid(f"{META_NAME} is malformed: `shards` is {type(shards).__name__}, not a list")
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict):
            raise CacheInvalid(f"{META_NAME} is malformed: shard {i} is {type(shard).__name__}, not a mapping")
        bad = [name for name, kind in _SHARD_RECORD.items() if type(shard.get(name)) is not kind]  # bool is no int
        if bad:
            raise CacheInvalid(f"{META_NAME} is malformed: shard {i} lacks a valid {bad} (have {shard!r:.200})")
        if Path(shard["file"]).name != shard["file"]:  # a path elsewhere on disk is never part of this entry
            raise CacheInvalid(f"{META_NAME} is malformed: shard file {shard['file']!r} is not inside the entry")


def read_entry(directory: str | os.PathLike, key: CacheKey) -> ReferenceLogpsCache:
    """Load and verify a complete entry; `CacheInvalid` (with the reason) if it is absent, partial or corrupted."""
    directory = Path(directory)
    meta_path = directory / META_NAME
    if not directory.is_dir():
        raise CacheInvalid("no entry for this key yet")
    if not meta_path.is_file():
        raise CacheInvalid(f"{META_NAME} is missing (an interrupted build)")
    try:
        meta = json.loads(meta_path.read_text())
        shards, num_rows = meta["shards"], int(meta["num_rows"])
    except (ValueError, KeyError, TypeError, OSError) as error:
        raise CacheInvalid(f"{META_NAME} is unreadable ({type(error).__name__}: {error})") from None
    if meta.get("format_version") != FORMAT_VERSION or meta.get("key") != key.as_dict():
        raise CacheInvalid(f"{META_NAME} was written for another key or format version")
    _check_shard_records(shards)
    parts = []
    for shard in shards:
        path = directory / shard["file"]
        try:
            data = path.read_bytes()
        except OSError:  # absent, or removed by a concurrent rebuild between the listing and the read
            raise CacheInvalid(f"shard {shard['file']} is missing") from None
        if len(data) != shard["bytes"] or hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise CacheInvalid(f"shard {shard['file']} does not match its checksum in {META_NAME} (truncated or "
                               "modified)")
        part = _read_shard(path, data)
        if len(part) != shard["rows"]:
            raise CacheInvalid(f"shard {shard['file']} has {len(part)} rows, {META_NAME} says {shard['rows']}")
        parts.append(part)
    if not parts:
        raise CacheInvalid(f"{META_NAME} lists no shards")
    merged = ReferenceLogpsCache.merge(parts) if len(parts) > 1 else parts[0]
    if not torch.equal(merged.rows, torch.arange(num_rows)):
        raise CacheInvalid(f"the entry holds {len(merged)} rows, expected rows 0..{num_rows - 1}")
    return merged


# ---------------------------------------------------------------------------------------------------------- build
@dataclass
class ProcessGroup:
    """The collective operations `load_or_build` needs; the default is a single process.

    `broadcast(obj)` returns rank 0's `obj` on every rank; `gather(obj)` returns the list of every rank's `obj` on
    every rank; `barrier()` waits for all ranks.
    """

    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = lambda: None
    broadcast: Callable[[Any], Any] = lambda obj: obj
    gather: Callable[[Any], list] = lambda obj: [obj]

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _replace_dir(tmp: Path, final: Path) -> None:
    stale = None
    if final.exists():
        stale = final.with_name(f".{final.name}.stale-{uuid.uuid4().hex[:8]}")
        os.replace(final, stale)
    os.replace(tmp, final)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def load_or_build(
    cache_dir: str | os.PathLike,
    key: CacheKey,
    compute_shard: Callable[[], ReferenceLogpsCache],
    *,
    num_rows: int,
    group: ProcessGroup | None = None,
    lock_timeout: float = -1,
) -> tuple[ReferenceLogpsCache, bool]:
    """The verified cache for `key`, built first if absent, incomplete or corrupted. Returns ``(values, built)``.

    On a miss every rank calls `compute_shard()` (the log-probs of its share of the rows), writes its shard into a
    temporary directory named by rank 0, and rank 0 checks the shards cover rows ``0 .. num_rows-1``, writes
    ``meta.json`` last, and renames the directory into place. Rank 0 holds ``<digest>.lock`` from the check to the
    end, so a concurrent run with the same key waits and then finds the entry complete (`lock_timeout` seconds, -1:
    forever). A verified hit takes no lock (and writes nothing), so a read-only `cache_dir` serves the entries it
    holds; a miss there raises `RuntimeError` saying so. All ranks must call this together.
    """
    from filelock import FileLock, Timeout

    group = group or ProcessGroup()
    cache_dir = Path(cache_dir)
    final = entry_dir(cache_dir, key)
    lock = None
    try:
        decision = None
        if group.is_main:
            try:
                # A verified hit needs no lock: entries appear by an atomic rename of a complete directory and are
                # checked against meta.json's checksums, so a read-only cache (shared, or a mounted copy) serves hits.
                values = read_entry(final, key)
                decision = {"hit": True}
            except CacheInvalid as miss:
                try:
                    cache_dir.mkdir(parents=True, exist_ok=True)
                    lock = FileLock(str(final) + ".lock", timeout=lock_timeout)
                    lock.acquire()
                except Timeout:
                    lock = None
                    decision = {"error": f"timed out after {lock_timeout} s waiting for {final}.lock (another run "
                                         "is building this entry)"}
                except OSError as error:  # read-only filesystem, no permission: nothing can be built here
                    lock = None
                    decision = {"error": (
                        f"the reference log-prob cache {cache_dir} has no usable entry for this run ({miss}) and "
                        f"cannot be written to build one ({type(error).__name__}: {error}). Point "
                        "`reference_cache_dir` at a writable directory, or build the entry there once with a "
                        "writable copy.")}
        if group.is_main and decision is None:
            try:
                values = read_entry(final, key)  # another run may have built it while we waited for the lock
                decision = {"hit": True}
            except CacheInvalid as error:
                if final.exists():
                    logger.warning("Reference log-prob cache %s is unusable (%s); rebuilding it.", final, error)
                else:
                    logger.info("Reference log-prob cache miss (%s); building %s.", error, final)
                # Temporary directories of this key left by a build that was killed: only the lock holder creates
                # them, so none of them is in use now.
                for leftover in cache_dir.glob(f".{key.digest}.*"):
                    shutil.rmtree(leftover, ignore_errors=True)
                tmp = cache_dir / f".{key.digest}.tmp-{uuid.uuid4().hex[:12]}"
                tmp.mkdir()
                decision = {"hit": False, "tmp": str(tmp)}
        decision = group.broadcast(decision)
        if "error" in decision:  # raised on every rank, after the broadcast, so none waits forever
            raise RuntimeError(decision["error"])
        if decision["hit"]:
            if not group.is_main:
                values = read_entry(final, key)
            group.barrier()  # nobody releases the lock (rank 0, if it took it) before everyone has read the entry
            return values, False

        tmp = Path(decision["tmp"])
        error = None
        try:
            write_shard(tmp, group.rank, group.world_size, compute_shard())
        except Exception as exc:  # every rank must reach the broadcast below, or the others hang
            error = f"rank {group.rank}: {type(exc).__name__}: {exc}"
        errors = [e for e in group.gather(error) if e]
        if group.is_main and not errors:
            try:
                finalize_entry(tmp, key, group.world_size, num_rows)
                _replace_dir(tmp, final)
            except Exception as exc:
                errors.append(f"rank 0: {type(exc).__name__}: {exc}")
        if group.is_main and errors:
            shutil.rmtree(tmp, ignore_errors=True)
        errors = group.broadcast(errors)
        if errors:
            raise RuntimeError(f"building the reference log-prob cache {final} failed: {errors}")
        values = read_entry(final, key)
        group.barrier()
        return values, True
    finally:
        if lock is not None:
            lock.release()

