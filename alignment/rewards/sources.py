"""Rewards from anywhere: one resolver from a recipe's string to a reward callable.

`resolve_reward(spec, **kwargs)` turns one entry of a recipe's ``reward_funcs`` into a callable with TRL's reward
signature ``fn(prompts, completions, **columns) -> list[float | None]`` and a stable ``__name__`` (TRL logs
``rewards/<__name__>/mean``). The forms, tried in this order::

    accuracy_reward                    a name in the `alignment.rewards` registry (kwargs: its hyper-parameters)
    path/to/file.py:fn                 a function in a Python file, relative to the working directory or absolute
    my_pkg.rewards:fn, my_pkg.rewards.fn   an importable function (the working directory is on the import path)
    outputs/my-reward-model, org/name  a reward model: a directory or Hub id of an AutoModelForSequenceClassification
                                       checkpoint with num_labels=1 (e.g. trained by scripts/run_reward.py)

A file or import-path function gets its ``reward_kwargs`` entry (keyed by the same string) bound with
`functools.partial`; its ``__name__`` is the function's name, as TRL names it. A reward model is named after the last
part of its path (TRL's ``get_config_model_id(config).split("/")[-1]``) and takes ``batch_size`` (default 16) and
``dtype`` (default ``float32``). A string that resolves to nothing is one ValueError listing what was tried and the
valid forms. `check_reward(reward, example)` calls a reward once on the first dataset example (or a dummy one), so a
broken function fails at start-up; `resolve_rewards` does both for a recipe's list (and refuses duplicate names).
`check_reward_sources` is the part that needs no model weights (a reward model's config only): `GroupRLConfig` runs
it, so a bad string fails before the policy loads.

What is reused and what is written here, and why:

* Import paths: TRL's CLI (``trl/scripts/grpo.py``) does ``importlib.import_module`` on ``module.fn`` after putting
  the working directory on ``sys.path``; this does the same, and adds ``module:fn`` and ``file.py:fn``, which TRL has
  not (its trainer takes callables, so the parsing lives in its script, not in a function we could call).
* Reward models in GRPO: TRL's ``GRPOTrainer`` already loads, places (``accelerator.prepare_model``, DeepSpeed / FSDP
  included) and scores a sequence classifier. `trl_reward_funcs` hands it the loaded model and tokenizer, so GRPO
  scores with TRL's own code. Evaluation and pair generation have no GRPOTrainer, so `RewardModelReward` scores the
  same texts itself: ``prompt + completion`` (the reward tokenizer's chat template when the prompts are
  conversational, as TRL's ``_calculate_rewards``), no special tokens added, right-padded, in eval mode and
  ``inference_mode``, the logit of label 0 (TRL's convention for num_labels=1), in batches with
  `alignment.modeling.reward_model.score_sequences` on the model's device (`RewardModelReward.to`). Loading and the
  num_labels check are `alignment.modeling.reward_model.load_reward_model`.
* Pickling: TRL 1.16's ``GRPOTrainer`` does not pickle rewards; its experimental ``AsyncGRPOTrainer`` sends them to a
  spawned process. File rewards live in a module that process cannot import by name, so `SourcedReward` and
  `RewardModelReward` pickle as their spec and kwargs and are resolved again on the other side (a reward model is
  reloaded from its path there).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..registry import reject_unknown
from .registry import RewardFunction, get_reward_function, list_rewards

VALID_FORMS = (
    "a registered reward name ({names}); an import path `pkg.module.fn` or `pkg.module:fn`; a file "
    "`path/to/file.py:fn` (relative to the working directory or absolute); or a reward model: a directory or Hub id "
    "of an AutoModelForSequenceClassification checkpoint with num_labels=1 (e.g. one trained by scripts/run_reward.py)"
)
_DOTTED_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# What TRL's GRPOTrainer passes to every reward besides prompts, completions and the dataset columns.
_TRL_EXTRAS = ("completion_ids", "trainer_state", "log_extra", "log_metric")
_REWARD_MODEL_DEFAULTS = {"batch_size": 16, "dtype": "float32"}


class RewardResolutionError(ValueError):
    """A reward string that is none of the valid forms (the message lists what was tried)."""


# --------------------------------------------------------------------------------------------------------- callables


class SourcedReward:
    """A function from a file or an import path with its ``reward_kwargs`` bound; picklable by spec."""

    def __init__(self, spec: str, fn: Callable, kwargs: Mapping[str, Any]):
        self.spec = spec
        self.kwargs = dict(kwargs)
        self.fn = functools.partial(fn, **self.kwargs)
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, prompts=None, completions=None, **kwargs: Any) -> list:
        return self.fn(prompts=prompts, completions=completions, **kwargs)

    def __repr__(self) -> str:
        return f"SourcedReward({self.spec!r}, {self.kwargs})"

    def __reduce__(self):
        return _rebuild, (self.spec, self.kwargs)


class RewardModelReward:
    """A sequence-classification reward model as a reward function (see the module docstring for the scoring)."""

    def __init__(self, spec: str, model, tokenizer, *, batch_size: int = 16, dtype: str = "float32"):
        from trl.trainer.utils import get_config_model_id

        self.spec, self.model, self.tokenizer = spec, model, tokenizer
        self.batch_size, self.dtype = batch_size, dtype
        # The name TRL gives a reward model (its logs say rewards/<name>/mean): the last part of its path.
        self.__name__ = get_config_model_id(model.config).split("/")[-1]

    def to(self, device) -> "RewardModelReward":
        self.model.to(device)
        return self

    def texts(self, prompts: Sequence, completions: Sequence) -> list[str]:
        """What the model reads: TRL's ``_calculate_rewards`` texts (chat template for conversational prompts)."""
        from trl.data_utils import apply_chat_template, is_conversational

        if len(prompts) != len(completions):
            raise ValueError(f"Got {len(prompts)} prompts but {len(completions)} completions.")
        if prompts and is_conversational({"prompt": prompts[0]}):
            return [apply_chat_template({"messages": list(p) + list(c)}, self.tokenizer)["text"]
                    for p, c in zip(prompts, completions)]
        return [p + c for p, c in zip(prompts, completions)]

    def __call__(self, prompts=None, completions=None, **kwargs: Any) -> list[float]:
        import torch

        from ..modeling.reward_model import score_sequences  # torch + transformers: loaded when a reward model scores

        if prompts is None or completions is None:
            raise ValueError(f"reward model {self.__name__!r} needs `prompts` and `completions`.")
        ids = self.tokenizer(self.texts(prompts, completions), add_special_tokens=False)["input_ids"]
        pad_id = self.model.config.get_text_config().pad_token_id
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return score_sequences(self.model, ids, pad_id, self.batch_size)
        finally:
            self.model.train(was_training)

    def __repr__(self) -> str:
        return f"RewardModelReward({self.spec!r}, batch_size={self.batch_size}, dtype={self.dtype!r})"

    def __reduce__(self):
        return _rebuild, (self.spec, {"batch_size": self.batch_size, "dtype": self.dtype})


def _rebuild(spec: str, kwargs: dict[str, Any]):
    return resolve_reward(spec, **kwargs)


# --------------------------------------------------------------------------------------------------------- resolving


def _check_signature(spec: str, fn: Callable, kwargs: Mapping[str, Any]) -> None:
    if not callable(fn):
        raise ValueError(f"{spec!r} is a {type(fn).__name__}, not a function.")
    params = inspect.signature(fn).parameters
    if inspect.Parameter.VAR_KEYWORD not in {p.kind for p in params.values()}:
        raise ValueError(f"reward {spec!r} must take `**kwargs`: TRL calls it as fn(prompts=..., completions=..., "
                        f"completion_ids=..., <dataset columns>..., trainer_state=..., log_extra=..., log_metric=...).")
    taken = sorted(set(kwargs) & {"prompts", "completions", *_TRL_EXTRAS})
    if taken:
        raise ValueError(f"reward_kwargs of {spec!r} set {taken}, which TRL passes at every call.")
    # **kwargs would swallow a misspelt hyper-parameter silently: only named parameters may be set.
    named = [name for name, p in params.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    reject_unknown(kwargs, named, f"reward {spec!r}", f"Its parameters: {', '.join(named) or 'none'}")


def _load_file_module(path: Path):
    """The module of a Python file, loaded once per absolute path under a stable private name."""
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_alignment_reward_file_{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _attribute(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _from_file(spec: str, tried: list[str]):
    file_part, _, attr = spec.rpartition(":")
    if not file_part.endswith(".py") or not attr:
        return None
    path = Path(file_part).expanduser()
    path = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not path.is_file():
        tried.append(f"file: {path} does not exist")
        return None
    try:
        return str(path) + ":" + attr, _attribute(_load_file_module(path), attr)
    except AttributeError:
        tried.append(f"file: {path} defines no `{attr}`")
    except Exception as error:  # the user's file failed to run: say how
        tried.append(f"file: loading {path} raised {type(error).__name__}: {error}")
    return None


def _from_import_path(spec: str, tried: list[str]):
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    elif _DOTTED_RE.fullmatch(spec):
        module_name, _, attr = spec.rpartition(".")
    else:
        return None
    if not module_name or not attr or module_name.endswith(".py"):  # a file path: `_from_file` reported it
        return None
    if os.getcwd() not in sys.path:  # as TRL's CLI does, so a module next to the recipe imports
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        tried.append(f"import path: `import {module_name}` raised {type(error).__name__}: {error}")
        return None
    try:
        return spec, _attribute(module, attr)
    except AttributeError:
        tried.append(f"import path: module {module_name} has no `{attr}`")
        return None


def _check_reward_model_config(path: str) -> None:
    """The checkpoint's config alone (no weights): a reward model has one output (`load_reward_model`'s check)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if getattr(config, "num_labels", None) != 1:
        raise ValueError(f"{path} is not a reward model: it has num_labels={getattr(config, 'num_labels', None)} "
                         f"(architectures {getattr(config, 'architectures', None)})")


def _reward_model(spec: str, kwargs: Mapping[str, Any], tried: list[str], load: bool = True):
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            tried.append(f"reward model: directory {local} has no config.json")
            return None
        path = os.path.normpath(str(local))  # no trailing slash: the model's name is the last path part
    elif _HUB_ID_RE.fullmatch(spec) and not spec.endswith(".py"):
        tried.append(f"reward model: no directory {local.resolve()}")
        path = spec
    else:
        tried.append(f"reward model: {spec} is not a directory" + ("" if "/" in spec else " or a Hub id (`org/name`)"))
        return None
    reject_unknown(kwargs, _REWARD_MODEL_DEFAULTS, f"reward model {spec!r}",
                   f"It takes {', '.join(f'{k} (default {v!r})' for k, v in _REWARD_MODEL_DEFAULTS.items())}")
    options = {**_REWARD_MODEL_DEFAULTS, **kwargs}
    batch_size = options["batch_size"]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"reward model {spec!r}: `batch_size` must be a positive int, got {batch_size!r}.")
    import torch

    if not isinstance(getattr(torch, str(options["dtype"]), None), torch.dtype):
        raise ValueError(f"reward model {spec!r}: `dtype` must name a torch dtype (float32, bfloat16, float16), "
                         f"got {options['dtype']!r}.")
    from ..modeling.reward_model import load_reward_model  # torch + transformers: loaded when a reward model loads

    try:
        if not load:
            _check_reward_model_config(path)
            return path
        model, tokenizer = load_reward_model(path, dtype=options["dtype"], device="cpu")
    except Exception as error:
        where = "the Hub id" if path == spec and not local.is_dir() else "the directory"
        tried.append(f"reward model: loading {where} {path} raised {type(error).__name__}: {error}")
        return None
    model.requires_grad_(False)
    return RewardModelReward(path, model, tokenizer, batch_size=batch_size, dtype=options["dtype"])


def resolve_reward(spec: str, **kwargs: Any) -> Callable:
    """The reward callable for ``spec`` (see the module docstring for the forms), with ``kwargs`` bound.

    Returns a `RewardFunction` (registry), `SourcedReward` (file / import path) or `RewardModelReward`; each has a
    stable ``__name__`` and TRL's signature. Raises `RewardResolutionError` listing what was tried when nothing fits.
    Does not call the reward: `check_reward` does.
    """
    return _resolve(spec, kwargs, load_models=True)


def check_reward_sources(specs: Sequence[str], reward_kwargs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """What `resolve_rewards` checks that needs no model weights: every string resolves, kwargs fit, reward models
    have a num_labels=1 config. Cheap enough for a config's start-up, before any model loads."""
    reward_kwargs = dict(reward_kwargs or {})
    unused = sorted(set(reward_kwargs) - set(specs))
    if unused:
        raise ValueError(f"`reward_kwargs` has entries for {unused}, which are not in `reward_funcs` ({list(specs)}).")
    for spec in specs:
        _resolve(spec, reward_kwargs.get(spec, {}), load_models=False)


def _resolve(spec: str, kwargs: Mapping[str, Any], load_models: bool):
    if not isinstance(spec, str) or not spec.strip():
        raise RewardResolutionError(f"A reward must be a non-empty string, got {spec!r}. It is "
                                    + VALID_FORMS.format(names=", ".join(list_rewards())) + ".")
    spec = spec.strip()
    if spec in list_rewards():
        return get_reward_function(spec, **kwargs)
    close = difflib.get_close_matches(spec, list_rewards(), n=1)
    tried = ["registry: not a registered reward" + (f" (did you mean {close[0]!r}?)" if close else "")]
    for source in (_from_file, _from_import_path):
        found = source(spec, tried)
        if found is not None:
            resolved_spec, fn = found
            _check_signature(spec, fn, kwargs)
            return SourcedReward(resolved_spec, fn, kwargs)
    model_reward = _reward_model(spec, kwargs, tried, load=load_models)
    if model_reward is not None:
        return model_reward
    raise RewardResolutionError(
        f"Cannot resolve reward {spec!r}. Tried:\n" + "\n".join(f"  - {line}" for line in tried)
        + "\nA reward is " + VALID_FORMS.format(names=", ".join(list_rewards())) + ".")


# --------------------------------------------------------------------------------------------------------- checking


def _noop(*args, **kwargs) -> None:
    return None


def check_reward(reward: Callable, example: Mapping[str, Any] | None = None) -> None:
    """Call ``reward`` once the way TRL's GRPOTrainer does, on ``example`` (a dataset row with a ``prompt``) or, without
    one, on a dummy string prompt with ``"1"`` for each column the function names; fail with its name if it raises
    or does not return one float (or None) per completion."""
    from transformers import TrainerState
    from trl.data_utils import is_conversational

    name = getattr(reward, "__name__", repr(reward))
    if example is None:
        # The function whose parameters name the columns: a registry entry's, a bound file function's, or the callable.
        target = reward.spec.fn if isinstance(reward, RewardFunction) else getattr(getattr(reward, "fn", None),
                                                                                    "func", reward)
        params = inspect.signature(target).parameters if callable(target) else {}
        example = {"prompt": "1", **{p: "1" for p, v in params.items()
                                     if v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
                                     and p not in ("prompts", "completions", *_TRL_EXTRAS)}}
        where = "a dummy example"
    else:
        where = "the first example of the dataset"
    prompt = example.get("prompt", "1")
    completion = [{"role": "assistant", "content": "1"}] if is_conversational({"prompt": prompt}) else "1"
    columns = {key: [value] for key, value in example.items() if key not in ("prompt", "completion", "completion_ids")}
    try:
        values = reward(prompts=[prompt], completions=[completion], completion_ids=[[0]], trainer_state=TrainerState(),
                        log_extra=_noop, log_metric=_noop, **columns)
        values = list(values)
        if len(values) != 1:
            raise ValueError(f"it returned {len(values)} values for 1 completion")
        if values[0] is not None and not math.isfinite(float(values[0])):
            raise ValueError(f"it returned {values[0]!r}")
    except Exception as error:
        raise ValueError(f"reward {name!r} failed its start-up call on {where} (completion {completion!r}, columns "
                         f"{sorted(columns)}): {type(error).__name__}: {error}. A reward is called as fn(prompts, "
                         "completions, completion_ids, <columns>, trainer_state, log_extra, log_metric) and returns "
                         "one float (or None) per completion.") from error


def call_reward(reward: Callable, prompts: Sequence, completions: Sequence[str], columns: Mapping[str, Sequence],
                tokenizer=None) -> list[float | None]:
    """Score generated ``completions`` (texts) of ``prompts`` with ``reward`` called the way TRL's GRPOTrainer calls it.

    Outside a GRPO run (evaluation, pair generation) there is no sampled token list and no trainer: conversational
    prompts get conversational completions (``[{"role": "assistant", "content": text}]``), ``completion_ids`` are the
    texts re-tokenized without special tokens (``tokenizer`` given; else empty lists), ``trainer_state`` is a fresh
    `TrainerState` and the log hooks do nothing. ``columns``: one value per completion for each dataset column.
    Returns one float or None ("not applicable", TRL's convention) per completion; anything else is an error naming
    the reward.
    """
    from transformers import TrainerState
    from trl.data_utils import is_conversational

    name = getattr(reward, "__name__", repr(reward))
    texts = list(completions)
    formatted = [[{"role": "assistant", "content": text}] if is_conversational({"prompt": prompt}) else text
                 for prompt, text in zip(prompts, texts)]
    ids = ([tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts] if tokenizer is not None
           else [[] for _ in texts])
    values = reward(prompts=list(prompts), completions=formatted, completion_ids=ids, trainer_state=TrainerState(),
                    log_extra=_noop, log_metric=_noop, **{key: list(value) for key, value in columns.items()})
    values = None if values is None else list(values)
    if values is None or len(values) != len(texts):
        raise ValueError(f"Reward {name!r} returned {None if values is None else len(values)} values for "
                         f"{len(texts)} completions; it must return one float (or None) per completion.")
    out: list[float | None] = []
    for i, value in enumerate(values):
        if value is not None and not math.isfinite(float(value)):
            raise ValueError(f"Reward {name!r} returned {value} for completion {i} ({texts[i][:80]!r}); return a "
                             "finite number, or None for 'not applicable'.")
        out.append(None if value is None else float(value))
    return out


def resolve_rewards(specs: Sequence[str], reward_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                    example: Mapping[str, Any] | None = None) -> list[Callable]:
    """`resolve_reward` for each string (its kwargs from ``reward_kwargs[spec]``), each checked by `check_reward` on
    ``example``. Fails on kwargs for strings not listed and on two rewards with the same name (their logs would mix)."""
    reward_kwargs = dict(reward_kwargs or {})
    specs = list(specs)
    unused = sorted(set(reward_kwargs) - set(specs))
    if unused:
        raise ValueError(f"`reward_kwargs` has entries for {unused}, which are not in `reward_funcs` ({specs}).")
    if not specs:
        raise ValueError("`reward_funcs` is empty; name at least one, e.g. `accuracy_reward`.")
    rewards = [resolve_reward(spec, **reward_kwargs.get(spec, {})) for spec in specs]
    names = [reward.__name__ for reward in rewards]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Two rewards in {specs} are both named {duplicates}; TRL logs and weights rewards by name. "
                         "Rename one of the functions (or directories).")
    for reward in rewards:
        check_reward(reward, example)
    return rewards


def trl_reward_funcs(rewards: Sequence[Callable]) -> tuple[list, list | None]:
    """``(reward_funcs, reward_processing_classes)`` for TRL's GRPOTrainer: a `RewardModelReward` becomes its model
    and tokenizer, so TRL places and scores it itself; ``None`` for the classes when there is no reward model."""
    funcs = [r.model if isinstance(r, RewardModelReward) else r for r in rewards]
    if not any(isinstance(r, RewardModelReward) for r in rewards):
        return funcs, None
    return funcs, [r.tokenizer if isinstance(r, RewardModelReward) else None for r in rewards]
