"""WARM: weight-averaged reward models (`alignment-warm`, `python -m alignment.warm`).

Ramé et al. 2024, "WARM: On the Benefits of Weight Averaged Reward Models", ICML 2024, arXiv 2401.12187.

Formula (the paper's definition of WARM): given M reward models r(.; phi_i) fine-tuned from ONE shared
initialisation (the same SFT weights and the same initial head) with different runs (seeds, data orders,
hyper-parameters), WARM is the single reward model with the averaged weights

    phi_WARM = 1/M * sum_i phi_i              (uniform, as in the paper)
    phi_w    = sum_i w_i phi_i / sum_i w_i    (``--weights``: a weighted mean; the weights are normalised)

Shared initialisation is what makes the members linearly mode connected (the averaged weights score like the
members, and better under distribution shift and label noise); averaging runs that did not start from the same
weights gives a model that scores like none of them. The paper contrasts WARM with prediction ensembling
(ENS: r_ENS(x) = 1/M sum_i r(x; phi_i)), which costs M forward passes; WARM costs one.

Paper vs code: there is no public code (the paper's experiments ran on Google-internal PaLM infrastructure; Papers
with Code lists no implementation and the authors' page links none), so this follows the paper. The paper also
describes "Baklava" diversity (members initialised from different checkpoints along one SFT run): those members
do not share their exact init, so `alignment-warm` refuses them unless ``--allow_different_init`` is given.

Same-init check: `alignment-reward` writes the sha256 of the model's weights right after the `score` head is
initialised, before training, into the saved config (`reward_init_sha256`, see `record_init_fingerprint`). All
members must carry the same value. Note that transformers draws the new `score` head from the torch RNG that
`--seed` seeds: members that should share their init keep ``seed`` fixed and vary ``data_seed`` (the order of the
training data; TRL/transformers' sampler reads it) or other hyper-parameters. Checkpoints without the record
(trained elsewhere) are merged with a warning: nothing can then verify the requirement.

Loading and saving go through transformers (`AutoModelForSequenceClassification.from_pretrained` /
`save_pretrained`, which uses safetensors); members are loaded one at a time and summed in float32, so memory is
two models plus one float32 accumulator, whatever M is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

logger = logging.getLogger("alignment")

INIT_HASH_KEY = "reward_init_sha256"

# Config entries that legitimately differ between members of one WARM (bookkeeping, not the architecture).
_CONFIG_KEYS_IGNORED = frozenset({"_name_or_path", "transformers_version", "dtype", "torch_dtype", INIT_HASH_KEY,
                                  "architectures"})


# ---------------------------------------------------------------------------------------------------- the formula


def normalized_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """The mixing weights w_i / sum_j w_j (uniform 1/M when ``weights`` is None); ValueError naming the bad value."""
    if count < 2:
        raise ValueError(f"WARM averages at least 2 reward models; got {count} checkpoint(s). Pass --checkpoints A B "
                         "[C ...]: reward models fine-tuned from the same initialisation.")
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"--weights has {len(weights)} value(s) for {count} checkpoints; give one weight per "
                         "checkpoint, in the same order.")
    bad = [w for w in weights if not math.isfinite(w) or w < 0]
    if bad:
        raise ValueError(f"--weights must be finite and >= 0 (got {bad}); they are normalised to sum to 1.")
    total = sum(weights)
    if total <= 0:
        raise ValueError("--weights sum to 0; at least one checkpoint needs a positive weight.")
    return [w / total for w in weights]


def average_state_dicts(state_dicts: Iterable[Mapping[str, torch.Tensor]], *, weights: Sequence[float] | None = None,
                        names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """phi = sum_i w_i phi_i with w = `normalized_weights` (uniform 1/M by default): WARM's weight average.

    Args:
        state_dicts: M >= 2 mappings key -> tensor, consumed one at a time (a generator that loads each checkpoint
            keeps one member in memory). Every member must have the first one's keys and shapes.
        weights: M non-negative mixing weights, normalised to sum to 1; None = uniform.
        names: M labels for error messages (checkpoint paths); default ``#0, #1, ...``.

    Returns: key -> tensor with the first member's shape and dtype. Floating tensors are summed in float32 (float64
    if a member is float64) and cast back; non-floating tensors (integer buffers) must be equal in every member and
    are copied.

    Raises ValueError naming the member and the key when keys, shapes or non-floating buffers differ.
    """
    state_dicts = iter(state_dicts)
    acc: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] = {}
    count = 0
    label = (lambda i: names[i]) if names is not None else (lambda i: f"#{i}")
    mix = None if weights is None else [float(w) for w in weights]
    if mix is not None:
        normalized_weights(mix, max(len(mix), 2))  # bad values fail before any member is loaded
    for i, state in enumerate(state_dicts):
        count += 1
        if mix is not None and i >= len(mix):
            raise ValueError(f"--weights has {len(mix)} value(s) for more checkpoints; give one weight per "
                             "checkpoint, in the same order.")
        w = 1.0 if mix is None else mix[i]  # normalised once all are counted (uniform needs M)
        if i == 0:
            first = {key: (t.shape, t.dtype) for key, t in state.items()}
            for key, t in state.items():
                acc[key] = (t.to(torch.float64 if t.dtype == torch.float64 else torch.float32) * w
                            if t.is_floating_point() else t.detach().clone())
            continue
        _check_same_keys(first, state, label(i), label(0))
        for key, t in state.items():
            if t.is_floating_point():
                acc[key].add_(t.to(acc[key].dtype), alpha=w)
            elif not torch.equal(acc[key], t):
                raise ValueError(f"Checkpoint {label(i)}: the non-floating tensor {key!r} differs from {label(0)}'s; "
                                 "WARM only averages reward models of one architecture and buffers.")
    normalized_weights(mix, count)  # the count and the weights' values, with the CLI's messages
    total = float(count) if mix is None else sum(mix)
    return {key: (t / total).to(first[key][1]) if t.is_floating_point() else t for key, t in acc.items()}


def _check_same_keys(reference: Mapping[str, tuple], state: Mapping[str, torch.Tensor], name: str, ref_name: str):
    missing = [k for k in reference if k not in state]
    extra = [k for k in state if k not in reference]
    if missing or extra:
        raise ValueError(f"Checkpoint {name} does not have {ref_name}'s weights: missing key(s) {missing[:5]}, "
                         f"unexpected key(s) {extra[:5]}. WARM averages reward models of one architecture.")
    for key, t in state.items():
        if tuple(t.shape) != tuple(reference[key][0]):
            raise ValueError(f"Checkpoint {name}: key {key!r} has shape {tuple(t.shape)} but {ref_name} has "
                             f"{tuple(reference[key][0])}. WARM averages reward models of one architecture.")


def ensemble_scores(member_scores: Sequence[Sequence[float]]) -> list[float]:
    """The prediction ensemble WARM is compared with: r_ENS(x) = 1/M sum_i r_i(x). ``member_scores``: M lists of N
    scores -> N scores."""
    if len({len(s) for s in member_scores}) != 1:
        raise ValueError("Every member must score the same sequences.")
    return [sum(values) / len(values) for values in zip(*member_scores)]


# ------------------------------------------------------------------------------------------------ init fingerprint


def init_fingerprint(model: torch.nn.Module) -> str | None:
    """sha256 of every parameter and buffer (name, dtype, shape, bytes) in `state_dict` order; None when the weights
    are partitioned (DeepSpeed ZeRO-3 leaves empty placeholders on each rank, so no process sees the whole init)."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        if tensor.numel() == 0 or hasattr(tensor, "ds_id"):
            return None
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def record_init_fingerprint(model: torch.nn.Module) -> str | None:
    """Store `init_fingerprint(model)` in ``model.config.reward_init_sha256`` (saved in config.json with the model)
    so that `alignment-warm` can check the members share their init. Call after the head is initialised, before
    training."""
    fingerprint = init_fingerprint(model)
    if fingerprint is None:
        logger.info("Reward-model init fingerprint skipped (partitioned weights); alignment-warm cannot check the "
                    "shared init of this run.")
    setattr(model.config, INIT_HASH_KEY, fingerprint)
    return fingerprint


# ------------------------------------------------------------------------------------------------- checkpoints


def _config_dict(config) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _CONFIG_KEYS_IGNORED}


def check_configs(paths: Sequence[str], configs: Sequence[Any]) -> None:
    """ValueError naming the checkpoint and the config key when members are not reward models of one architecture."""
    for path, config in zip(paths, configs):
        if getattr(config, "num_labels", None) != 1:
            labels = getattr(config, "num_labels", None)
            raise ValueError(f"Checkpoint {path} is not a reward model: num_labels={labels}"
                             f" (architectures {getattr(config, 'architectures', None)}); WARM averages 1-label "
                             "sequence classifiers, e.g. trained by `alignment-reward`.")
    reference = _config_dict(configs[0])
    for path, config in zip(paths[1:], configs[1:]):
        if config.architectures != configs[0].architectures:
            raise ValueError(f"Checkpoint {path} has architectures {config.architectures}, {paths[0]} has "
                             f"{configs[0].architectures}: WARM averages reward models of one architecture.")
        other = _config_dict(config)
        for key in sorted(set(reference) | set(other)):
            if reference.get(key) != other.get(key):
                raise ValueError(f"Checkpoint {path}: config key {key!r} is {other.get(key)!r} but {paths[0]} has "
                                 f"{reference.get(key)!r}. WARM averages reward models of one architecture.")


def check_tokenizers(paths: Sequence[str], tokenizers: Sequence[Any]) -> None:
    """ValueError naming the checkpoint and what differs (vocabulary, special tokens, chat template, padding side):
    averaged weights only mean something when every member read the same token ids."""
    def describe(tok) -> dict[str, Any]:
        return {"vocabulary": tok.get_vocab(), "special tokens": tok.special_tokens_map,
                "chat template": getattr(tok, "chat_template", None), "padding side": tok.padding_side}

    reference = describe(tokenizers[0])
    for path, tok in zip(paths[1:], tokenizers[1:]):
        for what, value in describe(tok).items():
            if value != reference[what]:
                raise ValueError(f"Checkpoint {path}: its tokenizer's {what} differs from {paths[0]}'s. WARM members "
                                 "must share one tokenizer (the same SFT model).")


def check_same_init(paths: Sequence[str], configs: Sequence[Any], *, allow_different_init: bool = False) -> str | None:
    """The members' common init fingerprint; ValueError naming the checkpoints when they differ (members fine-tuned
    from different inits are not linearly mode connected). None, with a warning, when some lack the record."""
    hashes = {path: getattr(config, INIT_HASH_KEY, None) for path, config in zip(paths, configs)}
    unknown = [path for path, h in hashes.items() if h is None]
    groups: dict[str, list[str]] = {}
    for path, h in hashes.items():
        if h is not None:
            groups.setdefault(h, []).append(path)
    if len(groups) > 1 and not allow_different_init:
        listing = "; ".join(f"{h[:12]}: {members}" for h, members in groups.items())
        raise ValueError(f"The checkpoints were not fine-tuned from the same initialisation ({INIT_HASH_KEY} in their "
                         f"config.json: {listing}). WARM averages members that share the SFT weights and the initial "
                         "score head: train them with the same `seed` and a different `data_seed` (or learning rate, "
                         "...). For intentionally different inits (the paper's Baklava) pass --allow_different_init.")
    if unknown:
        logger.warning("No %s recorded in %s (not trained by alignment-reward): cannot check that the members share "
                       "their initialisation, which WARM requires.", INIT_HASH_KEY, unknown)
        return None
    return next(iter(groups)) if len(groups) == 1 else None


def _check_inputs(paths: Sequence[str], output_dir: str, overwrite: bool) -> None:
    def identity(path: str) -> str:  # a local directory by its real path (so ./a and a are one), a Hub id as is
        return os.path.realpath(path) if os.path.exists(path) else path

    resolved = [identity(p) for p in paths]
    duplicates = sorted({p for p, r in zip(paths, resolved) if resolved.count(r) > 1})
    if duplicates:
        raise ValueError(f"Checkpoint(s) {duplicates} listed more than once; give each member once (use --weights to "
                         "weight one more).")
    for path in paths:
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
            hint = (" It holds a LoRA adapter: merge it into its base first (`merge_adapters_before_push: true` in the "
                    "reward recipe writes the merged model to a subfolder)."
                    if os.path.isfile(os.path.join(path, "adapter_config.json")) else "")
            raise ValueError(f"Checkpoint {path} has no config.json: not a full reward-model checkpoint.{hint}")
    if identity(output_dir) in resolved:
        raise ValueError(f"--output_dir {output_dir} is one of the checkpoints; write the merge elsewhere.")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise ValueError(f"--output_dir {output_dir} exists and is not empty; pass --overwrite or another directory.")


def merge_reward_models(checkpoints: Sequence[str], output_dir: str, *, weights: Sequence[float] | None = None,
                        allow_different_init: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Average reward-model checkpoints (WARM) into ``output_dir``: model, tokenizer, ``warm.json``, model card.

    Every check (count, weights, duplicates, configs, tokenizers, shared init, keys and shapes) runs before anything
    is written. Returns the summary written to ``warm.json``.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    paths = [str(p) for p in checkpoints]
    mix = normalized_weights(weights, len(paths))
    _check_inputs(paths, output_dir, overwrite)
    configs = [AutoConfig.from_pretrained(p) for p in paths]
    check_configs(paths, configs)
    check_tokenizers(paths, [AutoTokenizer.from_pretrained(p) for p in paths])
    init_hash = check_same_init(paths, configs, allow_different_init=allow_different_init)

    holder: dict[str, Any] = {}

    def members():
        for i, path in enumerate(paths):
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype="auto")
            if i == 0:
                holder["model"] = model  # the container the average is loaded into (first member's dtype)
            yield model.state_dict()

    merged = average_state_dicts(members(), weights=mix, names=paths)
    model = holder["model"]
    model.load_state_dict(merged, strict=True)
    setattr(model.config, INIT_HASH_KEY, init_hash)
    summary = {"method": "warm", "paper": "arXiv:2401.12187", "checkpoints": paths, "weights": mix,
               INIT_HASH_KEY: init_hash, "init_checked": init_hash is not None,
               "dtype": str(next(iter(merged.values())).dtype).removeprefix("torch.")}

    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(paths[0]).save_pretrained(output_dir)
    Path(output_dir, "warm.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_warm_card(output_dir, summary)
    return summary


def write_warm_card(output_dir: str, summary: Mapping[str, Any]) -> Path:
    """README.md (huggingface_hub's `ModelCard`): what was merged, with which weights, and whether the shared init
    was verified."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(library_name="transformers", pipeline_tag="text-classification",
                         tags=["reward-model", "warm", "weight-averaging", "alignment"])
    rows = "\n".join(f"| `{path}` | {w:.6g} |" for path, w in zip(summary["checkpoints"], summary["weights"]))
    init = (f"All members recorded the same initialisation (`{INIT_HASH_KEY}` = `{summary[INIT_HASH_KEY]}`)."
            if summary["init_checked"] else
            "The shared initialisation could NOT be verified (a member has no init record, or "
            "`--allow_different_init` was given).")
    body = f"""---
{data.to_yaml()}
---

# WARM reward model

A weight average of {len(summary['checkpoints'])} reward models (WARM, Ramé et al. 2024,
[arXiv:2401.12187](https://arxiv.org/abs/2401.12187)): phi = sum_i w_i phi_i, averaged in float32 and saved as
{summary['dtype']}, written by `alignment-warm`. It scores with one forward pass, like any member.

| member checkpoint | weight |
|---|---|
{rows}

{init}

```bibtex
@inproceedings{{rame2024warm,
  title     = {{WARM: On the Benefits of Weight Averaged Reward Models}},
  author    = {{Ram{{\\'e}}, Alexandre and Vieillard, Nino and Hussenot, L{{\\'e}}onard and Dadashi, Robert and Cideron, Geoffrey and Bachem, Olivier and Ferret, Johan}},
  booktitle = {{ICML}},
  year      = {{2024}},
  eprint    = {{2401.12187}},
  archivePrefix = {{arXiv}}
}}
```
"""
    path = Path(output_dir, "README.md")
    ModelCard(body).save(path)
    return path


# ---------------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignment-warm",
        description="WARM (arXiv 2401.12187): average the weights of reward models fine-tuned from one shared "
        "initialisation (same SFT model and head init; different data_seed / hyper-parameters) into one reward model.",
    )
    parser.add_argument("--checkpoints", nargs="+", required=True, metavar="DIR",
                        help="reward-model directories or Hub ids (at least 2), e.g. from alignment-reward runs")
    parser.add_argument("--output_dir", required=True, help="where the averaged model, tokenizer and card go")
    parser.add_argument("--weights", nargs="+", type=float, default=None,
                        help="one non-negative weight per checkpoint (normalised to sum to 1); default uniform")
    parser.add_argument("--allow_different_init", action="store_true",
                        help="merge members whose recorded inits differ (e.g. Baklava: different SFT checkpoints)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --output_dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args = _parser().parse_args(argv)
    summary = merge_reward_models(args.checkpoints, args.output_dir, weights=args.weights,
                                  allow_different_init=args.allow_different_init, overwrite=args.overwrite)
    print(f"WARM: averaged {len(summary['checkpoints'])} reward models (weights {summary['weights']}) into "
          f"{args.output_dir}")
    return 0
