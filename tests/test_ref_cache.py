"""The reference log-prob cache (`alignment.ref_cache`) and its use by `PreferenceTrainer` (`reference_cache_dir`)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.configs import PreferenceConfig
from alignment.losses import register_preference_loss
from alignment.ref_cache import (
    META_NAME,
    CacheInvalid,
    CacheKey,
    ReferenceLogpsCache,
    entry_dir,
    finalize_entry,
    hash_dataset,
    hash_text,
    hash_tokenizer,
    load_or_build,
    read_entry,
    write_shard,
)
from alignment.testing import build_tiny_tokenizer, perturb_parameters_, preference_pairs, trainer_test_args
from alignment.trainers import PreferenceTrainer
from alignment.trainers.reference_cache import ROW_COLUMN

ROOT = Path(__file__).resolve().parents[1]


def _key(**changes) -> CacheKey:
    base = CacheKey(reference="w", tokenizer="t", chat_template="c", dataset="d", max_length=128,
                    truncation_mode="keep_start", compute_dtype="torch.float32|mp=no|attn=sdpa")
    return replace(base, **changes)


def _values(rows, lengths, start=0.0) -> ReferenceLogpsCache:
    """Rows with distinct, recognisable values: row r's chosen tokens are -(r + 0.1 k), rejected -(r + 0.5 + 0.1 k)."""
    chosen = [-(torch.tensor(float(r)) + 0.1 * torch.arange(n)) - start for r, n in zip(rows, lengths)]
    rejected = [-(torch.tensor(float(r) + 0.5) + 0.1 * torch.arange(n + 1)) - start for r, n in zip(rows, lengths)]
    return ReferenceLogpsCache.from_rows(rows, chosen, rejected)


# ---------------------------------------------------------------------------------------------- key
@pytest.mark.parametrize("field, value", [
    ("reference", "w2"), ("tokenizer", "t2"), ("chat_template", "c2"), ("dataset", "d2"), ("max_length", 64),
    ("max_length", None), ("truncation_mode", "keep_end"), ("compute_dtype", "torch.bfloat16|mp=no|attn=sdpa"),
    ("format_version", 0),
])
def test_every_key_part_changes_the_digest(field, value):
    assert _key().digest == _key().digest
    assert _key(**{field: value}).digest != _key().digest


def test_dataset_hash_is_content_not_fingerprint():
    a, b = preference_pairs(6), preference_pairs(6)
    assert hash_dataset(a) == hash_dataset(b)
    assert hash_dataset(Dataset.from_dict(a.to_dict())) == hash_dataset(a)  # built another way, same content
    rows = a.to_list()
    rows[3]["chosen"] = [{"role": "assistant", "content": "8"}]
    assert hash_dataset(Dataset.from_list(rows)) != hash_dataset(a)
    assert hash_dataset(a.select([1, 0, 2, 3, 4, 5])) != hash_dataset(a)  # row order defines the row ids
    assert hash_dataset(a.select(range(5))) != hash_dataset(a)
    # a selection (indices mapping over the same buffers) hashes like the same rows built afresh
    assert hash_dataset(a.select([0, 2])) == hash_dataset(Dataset.from_list([a[0], a[2]]))
    assert hash_dataset(a.filter(lambda row: row["prompt"][0]["content"] != "What is 1 + 2?")) == hash_dataset(
        Dataset.from_list([a[i] for i in (0, 2, 3, 4, 5)]))
    assert hash_dataset(a.add_column("x", list(range(6))), exclude_columns=["x"]) == hash_dataset(a)


def test_tokenizer_hash_sees_vocabulary_and_special_tokens():
    first, second = build_tiny_tokenizer(), build_tiny_tokenizer()
    assert hash_tokenizer(first) == hash_tokenizer(second)
    second.add_tokens(["zebra"])
    assert hash_tokenizer(second) != hash_tokenizer(first)
    third = build_tiny_tokenizer()
    third.eos_token = "<|im_start|>"
    assert hash_tokenizer(third) != hash_tokenizer(first)
    assert hash_tokenizer(build_tiny_tokenizer(vocab_size=300)) != hash_tokenizer(first)
    assert hash_text(None) != hash_text("") and hash_text("a") != hash_text("b")


# ---------------------------------------------------------------------------------------------- values
def test_scatter_fills_completion_positions_in_order():
    cache = ReferenceLogpsCache.from_rows(
        [7, 2],
        chosen=[torch.tensor([-1.0, -2.0]), torch.tensor([-3.0])],
        rejected=[torch.tensor([-4.0]), torch.tensor([-5.0, -6.0, -7.0])],
    )
    # batch order: row 2 then row 7; rows 0-1 chosen, rows 2-3 rejected
    mask = torch.tensor([
        [0, 1, 0, 0],  # row 2 chosen: 1 token
        [0, 0, 1, 1],  # row 7 chosen: 2 tokens
        [1, 1, 1, 0],  # row 2 rejected: 3 tokens
        [0, 0, 0, 1],  # row 7 rejected: 1 token
    ], dtype=torch.bool)
    out = cache.scatter(torch.tensor([2, 7]), mask)
    expected = torch.tensor([
        [0.0, -3.0, 0.0, 0.0],
        [0.0, 0.0, -1.0, -2.0],
        [-5.0, -6.0, -7.0, 0.0],
        [0.0, 0.0, 0.0, -4.0],
    ])
    assert torch.equal(out, expected)


def test_scatter_refuses_mismatched_or_missing_rows():
    cache = ReferenceLogpsCache.from_rows([0], [torch.tensor([-1.0, -2.0])], [torch.tensor([-3.0])])
    with pytest.raises(RuntimeError, match="2 chosen token log-probs for dataset row 0 but the batch has 1"):
        cache.scatter(torch.tensor([0]), torch.tensor([[1, 0, 0], [1, 0, 0]], dtype=torch.bool))
    with pytest.raises(KeyError, match=r"\[5\]"):
        cache.scatter(torch.tensor([5]), torch.tensor([[1, 1], [1, 0]], dtype=torch.bool))


def test_from_rows_keeps_the_first_copy_of_a_repeated_row():
    cache = ReferenceLogpsCache.from_rows([3, 1, 3], [torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-9.0])],
                                         [torch.tensor([-4.0]), torch.tensor([-5.0]), torch.tensor([-9.0])])
    assert cache.rows.tolist() == [1, 3]
    assert cache.values(1, "chosen").tolist() == [-1.0] and cache.values(0, "rejected").tolist() == [-5.0]


# ---------------------------------------------------------------------------------------------- files
def _two_shard_entry(tmp_path, key, num_rows=5):
    directory = tmp_path / key.digest
    directory.mkdir()
    write_shard(directory, 0, 2, _values([0, 2, 4], [2, 1, 3]))
    write_shard(directory, 1, 2, _values([1, 3, 0], [1, 2, 2]))  # row 0 repeated (even_batches padding)
    finalize_entry(directory, key, 2, num_rows)
    return directory


def test_shards_merge_into_one_complete_entry(tmp_path):
    key = _key()
    directory = _two_shard_entry(tmp_path, key)
    meta = json.loads((directory / META_NAME).read_text())
    assert meta["num_rows"] == 5 and [s["rows"] for s in meta["shards"]] == [3, 3]
    merged = read_entry(directory, key)
    assert merged.rows.tolist() == [0, 1, 2, 3, 4]
    expected = _values([0, 2, 4], [2, 1, 3])  # rank 0's row 0 (listed first) wins over rank 1's copy
    assert torch.equal(merged.values(0, "chosen"), expected.values(0, "chosen"))
    assert torch.equal(merged.values(3, "rejected"), -(torch.tensor(3.5) + 0.1 * torch.arange(3)))


def test_finalize_refuses_shards_missing_rows(tmp_path):
    directory = tmp_path / "e"
    directory.mkdir()
    write_shard(directory, 0, 1, _values([0, 2], [1, 1]))
    with pytest.raises(CacheInvalid, match="expected rows 0..2"):
        finalize_entry(directory, _key(), 1, 3)
    assert not (directory / META_NAME).exists()


@pytest.mark.parametrize("damage, reason", [
    ("truncate", "checksum"),
    ("flip_byte", "checksum"),
    ("delete_shard", "missing"),
    ("delete_meta", "meta.json is missing"),
    ("garble_meta", "unreadable"),
    ("other_key", "another key"),
])
def test_damaged_entry_is_detected(tmp_path, damage, reason):
    key = _key()
    directory = _two_shard_entry(tmp_path, key)
    shard = directory / "shard-00001-of-00002.safetensors"
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-7])
    elif damage == "flip_byte":
        data = bytearray(shard.read_bytes())
        data[-3] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "delete_shard":
        shard.unlink()
    elif damage == "delete_meta":
        (directory / META_NAME).unlink()
    elif damage == "garble_meta":
        (directory / META_NAME).write_text("{not json")
    else:
        meta = json.loads((directory / META_NAME).read_text())
        meta["key"]["max_length"] = 64
        (directory / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(CacheInvalid, match=reason):
        read_entry(directory, key)


def test_load_or_build_builds_once_hits_then_rebuilds_a_damaged_entry(tmp_path, caplog):
    key, calls = _key(), []

    def compute():
        calls.append(1)
        return _values(range(4), [2, 3, 1, 2])

    values, built = load_or_build(tmp_path, key, compute, num_rows=4)
    assert built and len(calls) == 1
    again, built = load_or_build(tmp_path, key, compute, num_rows=4)
    assert not built and len(calls) == 1 and torch.equal(again.chosen_logps, values.chosen_logps)

    shard = next(entry_dir(tmp_path, key).glob("shard-*"))
    shard.write_bytes(shard.read_bytes()[:40])
    with caplog.at_level(logging.WARNING, logger="alignment.ref_cache"):
        rebuilt, built = load_or_build(tmp_path, key, compute, num_rows=4)
    assert built and len(calls) == 2 and torch.equal(rebuilt.rejected_logps, values.rejected_logps)
    assert any("unusable" in r.message and "checksum" in r.message for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([key.digest, key.digest + ".lock"])  # no leftovers


def test_failed_build_leaves_no_entry(tmp_path):
    def compute():
        raise OSError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        load_or_build(tmp_path, _key(), compute, num_rows=2)
    assert [p.name for p in tmp_path.iterdir()] == [_key().digest + ".lock"]
    with pytest.raises(RuntimeError, match="expected rows 0..2"):  # a shard short of rows is not finalized either
        load_or_build(tmp_path, _key(), lambda: _values([0, 1], [1, 1]), num_rows=3)
    assert not entry_dir(tmp_path, _key()).exists()


def test_leftovers_of_a_killed_build_are_removed(tmp_path):
    key = _key()
    leftover = tmp_path / f".{key.digest}.tmp-deadbeef"
    leftover.mkdir(parents=True)
    write_shard(leftover, 0, 1, _values([0], [1]))  # a shard without meta.json: the build died here
    load_or_build(tmp_path, key, lambda: _values(range(2), [1, 1]), num_rows=2)
    assert not leftover.exists()
    assert read_entry(entry_dir(tmp_path, key), key).rows.tolist() == [0, 1]


def test_concurrent_runs_build_once(tmp_path):
    key, calls, results = _key(), [], []

    def compute():
        calls.append(1)
        time.sleep(0.3)  # long enough for the other run to reach the lock
        return _values(range(3), [1, 2, 3])

    def run():
        results.append(load_or_build(tmp_path, key, compute, num_rows=3))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(built for _, built in results) == [False, True]
    assert torch.equal(results[0][0].chosen_logps, results[1][0].chosen_logps)


@pytest.mark.parametrize("shards", [
    [{}],  # parses as JSON, lacks every field
    "shard-00000-of-00001.safetensors",  # not a list
    [["shard-00000-of-00001.safetensors", 1]],  # a record that is not a mapping
    [{"file": "shard-00000-of-00001.safetensors", "bytes": "12", "sha256": "0", "rows": 2}],  # wrong type
    [{"file": "../elsewhere.safetensors", "bytes": 1, "sha256": "0", "rows": 2}],  # outside the entry
])
def test_malformed_meta_is_rebuilt_not_a_crash(tmp_path, caplog, shards):
    key = _key()
    load_or_build(tmp_path, key, lambda: _values(range(2), [1, 2]), num_rows=2)
    meta_path = entry_dir(tmp_path, key) / META_NAME
    meta = json.loads(meta_path.read_text())
    meta["shards"] = shards
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CacheInvalid, match="malformed"):
        read_entry(entry_dir(tmp_path, key), key)
    with caplog.at_level(logging.WARNING, logger="alignment.ref_cache"):
        values, built = load_or_build(tmp_path, key, lambda: _values(range(2), [1, 2]), num_rows=2)
    assert built and values.rows.tolist() == [0, 1]
    assert any("unusable" in r.message and "malformed" in r.message for r in caplog.records)


def _store_behind_the_checksums(directory: Path, values: ReferenceLogpsCache) -> None:
    """Replace a 1-shard entry's values and re-sign meta.json: a verified file whose numbers are bad."""
    from alignment.modeling.models import file_sha256

    shard = write_shard(directory, 0, 1, values)
    meta = json.loads((directory / META_NAME).read_text())
    meta["shards"][0].update(bytes=shard.stat().st_size, sha256=file_sha256(shard), rows=len(values))
    (directory / META_NAME).write_text(json.dumps(meta))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_stored_values_are_rebuilt(tmp_path, caplog, bad):
    key = _key()
    good, _ = load_or_build(tmp_path, key, lambda: _values(range(3), [1, 2, 2]), num_rows=3)
    poisoned = _values(range(3), [1, 2, 2])
    poisoned.rejected_logps[3] = bad  # row 1's first rejected token (row 0 has 2 rejected values)
    _store_behind_the_checksums(entry_dir(tmp_path, key), poisoned)
    with pytest.raises(CacheInvalid, match="non-finite rejected log-probs .*row 1"):
        read_entry(entry_dir(tmp_path, key), key)
    with caplog.at_level(logging.WARNING, logger="alignment.ref_cache"):
        values, built = load_or_build(tmp_path, key, lambda: _values(range(3), [1, 2, 2]), num_rows=3)
    assert built and torch.equal(values.rejected_logps, good.rejected_logps)
    assert any("non-finite" in r.message for r in caplog.records)


def test_a_build_that_computes_nan_is_refused(tmp_path):
    poisoned = _values(range(2), [2, 2])
    poisoned.chosen_logps[2] = float("nan")  # row 1's first chosen token
    with pytest.raises(RuntimeError, match="non-finite chosen log-probs .*row 1"):
        load_or_build(tmp_path, _key(), lambda: poisoned, num_rows=2)
    assert not entry_dir(tmp_path, _key()).exists()


@pytest.fixture
def read_only(monkeypatch):
    """`read_only(root)`: every attempt to create or write a file or directory under `root` fails with EROFS.

    The tests run as root, which `chmod a-w` does not stop, so the read-only filesystem is simulated at the calls
    that write: `os.open` with a write flag (filelock's lock file), `os.mkdir`, and `open` in a write mode.
    """
    import builtins
    import errno
    import io

    roots = []
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded(path):
        return any(Path(os.path.abspath(path)).is_relative_to(r) for r in roots)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    real_os_open, real_mkdir, real_open = os.open, os.mkdir, builtins.open

    def os_open(path, flags, *args, **kwargs):
        if flags & write_flags and guarded(path):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if guarded(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and guarded(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    return lambda root: roots.append(Path(root).resolve())


def test_read_only_cache_serves_its_valid_entries(tmp_path, read_only):
    key = _key()
    built_values, _ = load_or_build(tmp_path, key, lambda: _values(range(3), [1, 2, 3]), num_rows=3)
    (tmp_path / f"{key.digest}.lock").unlink()  # e.g. a copy of the entries only, mounted read-only
    before = sorted(p.name for p in tmp_path.iterdir())
    read_only(tmp_path)

    def compute():
        raise AssertionError("a hit must not compute")

    values, built = load_or_build(tmp_path, key, compute, num_rows=3)
    assert not built and torch.equal(values.chosen_logps, built_values.chosen_logps)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no lock file, nothing written


def test_read_only_cache_without_the_entry_says_so(tmp_path, read_only):
    load_or_build(tmp_path, _key(), lambda: _values(range(2), [1, 1]), num_rows=2)
    read_only(tmp_path)
    with pytest.raises(RuntimeError, match=r"no usable entry.*cannot be written.*Point `reference_cache_dir`"):
        load_or_build(tmp_path, _key(max_length=64), lambda: _values(range(2), [1, 1]), num_rows=2)


# ---------------------------------------------------------------------------------------------- trainer
def _trainer(model_dir, tmp_path, dataset, model=None, tokenizer=None, eval_dataset=None, **overrides):
    args = PreferenceConfig(**trainer_test_args(tmp_path, **overrides))
    return PreferenceTrainer(
        model=model if model is not None else AutoModelForCausalLM.from_pretrained(model_dir),
        args=args, train_dataset=dataset, eval_dataset=eval_dataset,
        processing_class=tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_dir),
    )


@pytest.fixture
def no_reference_model(monkeypatch):
    """TRL must never build a reference model (it would do so with `create_model_from_path`)."""
    import trl.trainer.dpo_trainer as dpo_trainer

    def refuse(*args, **kwargs):
        raise AssertionError("a reference model was loaded")

    monkeypatch.setattr(dpo_trainer, "create_model_from_path", refuse)


def _count_forwards(model) -> list[int]:
    calls = []
    model.model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_cached_reference_gives_the_same_loss_and_gradients(tiny_model_dir, tmp_path, no_reference_model):
    dataset = preference_pairs(8)
    cache = str(tmp_path / "cache")
    cached = _trainer(tiny_model_dir, tmp_path, dataset, reference_cache_dir=cache, beta=0.3)
    assert cached.ref_model is None and cached.reference_cache_report[0]["built"]
    assert not cached.args.precompute_ref_log_probs  # the user's args are left as given
    from alignment.trainers.preference import PreferenceTrainer as Plain  # same class, cache off

    plain = Plain(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                  ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                  args=PreferenceConfig(**trainer_test_args(tmp_path, beta=0.3)), train_dataset=dataset,
                  processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    for trainer in (cached, plain):
        perturb_parameters_(trainer.model)  # policy != reference, so the margin is not 0
        trainer.model.train()
    batch = next(iter(cached.get_train_dataloader()))
    assert ROW_COLUMN in batch
    forwards = _count_forwards(cached.model)
    cached_loss = cached.compute_loss(cached.model, dict(batch))
    assert len(forwards) == 1  # the policy's; the reference comes from disk
    plain_loss = plain.compute_loss(plain.model, {k: v for k, v in batch.items() if k != ROW_COLUMN})
    assert abs(plain_loss.item() - torch.log(torch.tensor(2.0)).item()) > 1e-3
    torch.testing.assert_close(cached_loss, plain_loss, rtol=0, atol=1e-6)
    cached_loss.backward()
    plain_loss.backward()
    for (name, p_cached), (_, p_plain) in zip(cached.model.named_parameters(), plain.model.named_parameters()):
        torch.testing.assert_close(p_cached.grad, p_plain.grad, rtol=1e-5, atol=1e-7, msg=name)
    for key in ("rewards/chosen", "rewards/rejected", "logps/chosen"):
        assert abs(cached._metrics["train"][key][-1] - plain._metrics["train"][key][-1]) < 1e-5, key


def test_second_run_reads_the_cache_and_trains_identically(tiny_model_dir, tmp_path, no_reference_model,
                                                           monkeypatch):
    dataset, eval_dataset = preference_pairs(8), preference_pairs(4).select([3, 1, 2, 0])
    cache = str(tmp_path / "cache")
    first = _trainer(tiny_model_dir, tmp_path / "a", dataset, reference_cache_dir=cache, eval_dataset=eval_dataset)
    assert [r["built"] for r in first.reference_cache_report] == [True, True]
    first.train()

    def refuse(*args, **kwargs):
        raise AssertionError("the reference was recomputed on a cache hit")

    monkeypatch.setattr(PreferenceTrainer, "_compute_reference_shard", refuse)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    forwards = _count_forwards(model)
    second = _trainer(tiny_model_dir, tmp_path / "b", dataset, model=model, reference_cache_dir=cache,
                      eval_dataset=eval_dataset)
    assert [r["built"] for r in second.reference_cache_report] == [False, False]
    assert second.ref_model is None and forwards == []  # no forward at all before training
    second.train()
    assert len(forwards) == 2  # one per step (max_steps=2), the policy's
    for (name, a), (_, b) in zip(first.model.named_parameters(), second.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)

    # evaluation reads the eval entry: same loss as a run that computes the reference
    monkeypatch.undo()
    plain = PreferenceTrainer(model=second.model, ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                              args=PreferenceConfig(**trainer_test_args(tmp_path / "c")), train_dataset=dataset,
                              eval_dataset=eval_dataset, processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    forwards.clear()
    cached_eval = second.evaluate()
    assert len(forwards) == 1  # 4 pairs, eval batch 8: one policy forward, no reference forward
    torch.testing.assert_close(cached_eval["eval_loss"], plain.evaluate()["eval_loss"], rtol=0, atol=1e-6)


def test_peft_reference_is_the_base_model(tiny_model_dir, tmp_path, no_reference_model):
    """Under LoRA the reference is the policy with its adapters off: cached values equal the live computation."""
    from peft import LoraConfig

    def make(**overrides):
        return PreferenceTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=PreferenceConfig(**trainer_test_args(tmp_path, **overrides)), train_dataset=preference_pairs(8),
            processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        )

    cached, plain = make(reference_cache_dir=str(tmp_path / "c")), make()
    assert cached.reference_cache_report[0]["built"]
    batch = next(iter(cached.get_train_dataloader()))
    cached.model.train()
    plain.model.train()
    loss = cached.compute_loss(cached.model, dict(batch))
    expected = plain.compute_loss(plain.model, {k: v for k, v in batch.items() if k != ROW_COLUMN})
    assert abs(expected.item() - torch.log(torch.tensor(2.0)).item()) > 1e-4  # adapters on: policy != reference
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)


def test_evaluate_on_known_data_reuses_the_loaded_values(tiny_model_dir, tmp_path, monkeypatch):
    eval_dataset = preference_pairs(4)
    trainer = _trainer(tiny_model_dir, tmp_path, preference_pairs(6), reference_cache_dir=str(tmp_path / "c"),
                       eval_dataset=eval_dataset)
    first = trainer.evaluate()
    monkeypatch.setattr(PreferenceTrainer, "_compute_reference_shard", lambda *a, **k: pytest.fail("recomputed"))
    again = trainer.evaluate(eval_dataset)  # passed anew: TRL re-tokenizes it and asks for its reference log-probs
    assert len(trainer._reference_caches) == 2 and len(trainer.reference_cache_report) == 2
    assert again["eval_loss"] == first["eval_loss"]


def _changed(kind, tiny_model_dir, tmp_path):
    """Trainer inputs with one key part changed: (dataset, model, tokenizer, overrides)."""
    dataset = preference_pairs(6)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    overrides = {}
    if kind == "weights":
        perturb_parameters_(model, scale=1e-3)
    elif kind == "tokenizer":
        tokenizer.add_tokens(["zebra"])  # a token the data never uses: same ids, different tokenizer
    elif kind == "chat_template":
        tokenizer.chat_template = tokenizer.chat_template.replace("<|im_start|>", "<|im_start|> ", 1)
    elif kind == "dataset":
        rows = dataset.to_list()
        rows[2]["rejected"] = [{"role": "assistant", "content": "99"}]
        dataset = Dataset.from_list(rows)
    elif kind == "max_length":
        overrides["max_length"] = 20
    elif kind == "truncation_mode":
        overrides.update(max_length=20, truncation_mode="keep_end")
    return dataset, model, tokenizer, overrides


@pytest.mark.parametrize("kind", ["weights", "tokenizer", "chat_template", "dataset", "max_length",
                                  "truncation_mode"])
def test_changing_a_key_part_misses(tiny_model_dir, tmp_path, kind):
    cache = tmp_path / "cache"
    base = _trainer(tiny_model_dir, tmp_path, preference_pairs(6), reference_cache_dir=str(cache))
    assert base.reference_cache_report[0]["built"]
    dataset, model, tokenizer, overrides = _changed(kind, tiny_model_dir, tmp_path)
    changed = _trainer(tiny_model_dir, tmp_path, dataset, model=model, tokenizer=tokenizer,
                       reference_cache_dir=str(cache), **overrides)
    report = changed.reference_cache_report[0]
    assert report["built"] and report["entry"] != base.reference_cache_report[0]["entry"]
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2
    # and the same inputs once more hit
    dataset, model, tokenizer, overrides = _changed(kind, tiny_model_dir, tmp_path)
    again = _trainer(tiny_model_dir, tmp_path, dataset, model=model, tokenizer=tokenizer,
                     reference_cache_dir=str(cache), **overrides)
    assert not again.reference_cache_report[0]["built"]


def test_truncated_values_fit_the_truncated_batches(tiny_model_dir, tmp_path):
    """keep_end truncation cuts into prompts: the cached values still land on the right tokens."""
    trainer = _trainer(tiny_model_dir, tmp_path, preference_pairs(6), reference_cache_dir=str(tmp_path / "c"),
                       max_length=12, truncation_mode="keep_end")
    plain = _trainer(tiny_model_dir, tmp_path, preference_pairs(6), max_length=12, truncation_mode="keep_end")
    perturb_parameters_(trainer.model)
    perturb_parameters_(plain.model)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].size(1) == 12
    loss = trainer.compute_loss(trainer.model, dict(batch))
    expected = plain.compute_loss(plain.model, {k: v for k, v in batch.items() if k != ROW_COLUMN})
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncate_shard", "delete_meta"])
def test_trainer_rebuilds_a_damaged_entry(tiny_model_dir, tmp_path, caplog, damage):
    cache = tmp_path / "cache"
    first = _trainer(tiny_model_dir, tmp_path, preference_pairs(6), reference_cache_dir=str(cache))
    entry = Path(first.reference_cache_report[0]["entry"])
    reference = read_entry(entry, _read_key(entry))
    if damage == "truncate_shard":
        shard = next(entry.glob("shard-*"))
        shard.write_bytes(shard.read_bytes()[:-16])
    else:
        (entry / META_NAME).unlink()
    with caplog.at_level(logging.WARNING, logger="alignment.ref_cache"):
        second = _trainer(tiny_model_dir, tmp_path, preference_pairs(6), reference_cache_dir=str(cache))
    assert second.reference_cache_report[0]["built"]
    assert any("rebuilding" in record.message for record in caplog.records)
    rebuilt = read_entry(entry, _read_key(entry))
    torch.testing.assert_close(rebuilt.chosen_logps, reference.chosen_logps, rtol=0, atol=1e-6)


def _read_key(entry: Path) -> CacheKey:
    meta_path = entry / META_NAME
    if meta_path.exists():
        return CacheKey(**json.loads(meta_path.read_text())["key"])
    raise AssertionError("no meta")


@register_preference_loss("_test_needs_token_kl", requires=("token_kl",))
def _needs_token_kl(batch, *, beta: float = 0.1):
    return -torch.nn.functional.logsigmoid(beta * batch.logratio_margin), {}


@pytest.mark.parametrize("overrides, message", [
    ({"loss_type": ["_test_needs_token_kl"]}, "full outputs"),
    ({"sync_ref_model": True}, "sync_ref_model"),
])
def test_unsupported_settings_fail_at_start(tiny_model_dir, tmp_path, no_reference_model, overrides, message):
    with pytest.raises(ValueError, match=message):
        _trainer(tiny_model_dir, tmp_path, preference_pairs(4), reference_cache_dir=str(tmp_path / "c"), **overrides)
    assert not (tmp_path / "c").exists()


def test_iterable_dataset_fails_at_start(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="map-style"):
        _trainer(tiny_model_dir, tmp_path, preference_pairs(4).to_iterable_dataset(),
                 reference_cache_dir=str(tmp_path / "c"), max_steps=1)


# ---------------------------------------------------------------------------------------------- two processes
def _launch(args, env):
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


# Two launches (2 ranks, then 1): 14.6 s measured on a quiet 2-core box, 32 s under heavy load.
def test_two_process_launch_builds_one_complete_cache(tiny_model_dir, tmp_path):
    """Two gloo ranks each compute their share; rank 0 writes one entry; a 1-process run then hits it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TQDM_DISABLE="1", WANDB_DISABLED="true")
    env.pop("WORLD_SIZE", None)
    cache = tmp_path / "cache"
    common = ["--config", str(ROOT / "recipes/tiny/dpo.yaml"), "--model_name_or_path", str(tiny_model_dir),
              "--reference_cache_dir", str(cache), "--max_steps", "2", "--save_strategy", "no",
              "--eval_after_training", "false"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "accelerate_configs/cpu_2proc.yaml"), "--main_process_port", str(port),
              str(ROOT / "scripts/run_dpo.py"), *common, "--output_dir", str(tmp_path / "two")]
    two = _launch(launch, env)
    log = two.stdout + two.stderr
    assert two.returncode == 0, log[-6000:]
    assert "rank 1 of world size 2" in log
    entries = sorted(p for p in cache.iterdir() if p.is_dir())
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    assert len(entries) == 2  # the recipe's train split and its test split (the trainer's eval set)
    rows = {}
    for entry in entries:
        meta = json.loads((entry / META_NAME).read_text())
        assert meta["world_size"] == 2 and len(meta["shards"]) == 2
        assert all(shard["rows"] > 0 for shard in meta["shards"])  # both ranks contributed
        values = read_entry(entry, CacheKey(**meta["key"]))
        assert values.rows.tolist() == list(range(meta["num_rows"]))
        rows[entry] = meta["num_rows"]
    assert 64 in rows.values()  # 2 domains x 32 training pairs
    written = {entry: (entry / META_NAME).stat().st_mtime_ns for entry in entries}

    one = _launch([sys.executable, str(ROOT / "scripts/run_dpo.py"), *common, "--output_dir", str(tmp_path / "one")],
                  env)
    log = one.stdout + one.stderr
    assert one.returncode == 0, log[-6000:]
    # the 1-process run found the same key (world size is not part of it) and read the entry without rewriting it
    assert sorted(p for p in cache.iterdir() if p.is_dir()) == entries
    assert {entry: (entry / META_NAME).stat().st_mtime_ns for entry in entries} == written
