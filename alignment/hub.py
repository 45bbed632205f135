"""Model cards and pushing a finished run to the Hugging Face Hub.

`render_model_card` / `write_model_card` produce the README.md of an output directory; `push_folder_to_hub` uploads
that directory (weights, tokenizer, card) in one commit, leaving intermediate `checkpoint-*` folders and optimizer
states behind. The Hub endpoint, token and upload protocol come from the usual `huggingface_hub` environment
variables (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_DISABLE_XET`, ...), read when `huggingface_hub` is first imported; a
recipe's `hub_token` is passed to the push explicitly and overrides `HF_TOKEN`. `validate_hub_model_id` checks the
repo id at start-up.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_IGNORE_PATTERNS",
    "METHOD_DESCRIPTIONS",
    "framework_versions",
    "push_folder_to_hub",
    "render_model_card",
    "validate_hub_model_id",
    "write_model_card",
]

# What each method optimises, for the card. Keys are lower-case method names; unknown methods get a generic line.
METHOD_DESCRIPTIONS: dict[str, str] = {
    "sft": "Supervised fine-tuning (SFT): maximises the log-likelihood of the reference completions given their "
    "prompts (cross-entropy on completion tokens only).",
    "dpo": "Direct Preference Optimization (DPO): increases the margin between the policy/reference log-ratios of "
    "the chosen and rejected completions through a logistic (Bradley-Terry) loss, without a separate reward model.",
    "ipo": "Identity Preference Optimization (IPO): regresses the chosen-minus-rejected log-ratio margin towards "
    "1/(2*beta) with a squared loss, which avoids DPO's over-fitting to deterministic preferences.",
    "simpo": "SimPO: a reference-free preference loss on the length-normalised average log-probability of the chosen "
    "and rejected completions, with a target reward margin gamma.",
    "orpo": "ORPO: the SFT loss on the chosen completion plus an odds-ratio penalty that favours the chosen over the "
    "rejected completion, in a single stage without a reference model.",
    "cpo": "Contrastive Preference Optimization (CPO): a reference-free preference loss plus a behaviour-cloning "
    "term on the chosen completions.",
    "kto": "Kahneman-Tversky Optimization (KTO): maximises a prospect-theoretic utility of single completions "
    "labelled desirable or undesirable, relative to a KL reference point.",
    "grpo": "Group Relative Policy Optimization (GRPO): samples a group of completions per prompt, scores them with "
    "reward functions, and maximises a clipped policy-gradient objective with group-normalised advantages "
    "(optionally with a KL penalty to the reference model).",
    "rloo": "REINFORCE Leave-One-Out (RLOO): a policy-gradient objective whose baseline for each sample is the mean "
    "reward of the other samples for the same prompt.",
    "ppo": "Proximal Policy Optimization (PPO): maximises a clipped surrogate of the reward-model score with a "
    "learned value baseline and a KL penalty to the reference model.",
    "reward": "Reward modelling: trains a scalar head so that chosen completions score higher than rejected ones "
    "(Bradley-Terry loss).",
    "doremi": "DoReMi-style data-mixture reweighting: the domain weights of the training mixture are adapted online "
    "(exponentiated-gradient updates on per-domain excess loss) while the model is trained on the reweighted mixture.",
}

# Left out of a pushed output directory: intermediate checkpoints, optimizer / scheduler / RNG states, DeepSpeed
# shards, and the pickled TrainingArguments (`recipe.yaml` is the readable config; a pickle runs code when loaded).
# (`upload_folder` matches with fnmatch on the path relative to the folder, where `*` also matches `/`.)
DEFAULT_IGNORE_PATTERNS: list[str] = [
    "*training_args.bin",
    "checkpoint-*",
    "*/checkpoint-*",
    "global_step*",
    "*/global_step*",
    "*optimizer.pt",
    "*optimizer.bin",
    "*optimizer.safetensors",
    "*scheduler.pt",
    "*scaler.pt",
    "*rng_state*.pth",
    "*.lock",
    "wandb/*",
]

_FRAMEWORKS = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")
# `accuracy/<domain>` (also `eval/accuracy/<domain>`, `eval_accuracy/<domain>`) -> per-domain accuracy table.
_DOMAIN_ACCURACY_RE = re.compile(r"^(?:eval[/_])?accuracy/(?P<domain>[^/]+)$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def framework_versions(packages: Sequence[str] = _FRAMEWORKS) -> dict[str, str]:
    """Installed versions of the given distributions ("not installed" when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _is_hub_id(name: str | None) -> bool:
    """Whether `name` looks like a Hub repo id (and is not a local directory)."""
    if not name or not _HUB_ID_RE.match(name) or name.count("/") > 1:
        return False
    return not os.path.isdir(name)


def _to_plain(value: Any) -> Any:
    """Make a recipe value YAML-safe: mappings/sequences recursively, paths/enums/other objects as strings."""
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_to_plain(v) for v in items]
    if isinstance(value, enum.Enum):
        return _to_plain(value.value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _to_plain(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def _fmt_metric(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _metrics_section(metrics: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Evaluation results", ""]
    if not metrics:
        return lines + ["No evaluation metrics were recorded for this run.", ""]
    per_domain, others = {}, {}
    for key, value in metrics.items():
        m = _DOMAIN_ACCURACY_RE.match(str(key))
        if m:
            per_domain[m["domain"]] = value
        else:
            others[str(key)] = value
    if others:
        lines += ["| Metric | Value |", "|---|---|"]
        lines += [f"| {k} | {_fmt_metric(v)} |" for k, v in others.items()]
        lines.append("")
    if per_domain:
        lines += ["### Accuracy per domain", "", "| Domain | Accuracy |", "|---|---|"]
        lines += [f"| {d} | {_fmt_metric(v)} |" for d, v in per_domain.items()]
        lines.append("")
    return lines


def render_model_card(
    *,
    model_name: str,
    base_model: str | None,
    method: str,
    recipe: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    datasets: Sequence[str] | None = None,
    adapter: bool = False,
) -> str:
    """Render a Hugging Face model card (README.md) for a trained model.

    `adapter=True` (a LoRA run's output: adapter_config.json + adapter weights) marks the repo as a PEFT adapter of
    `base_model` (`library_name: peft`, `lora`/`peft` tags, a loading snippet that puts the adapter on the base).

    `model_name` is used as the title and as the repo id in the loading snippet (pass the Hub repo id when pushing).
    `base_model` goes into the YAML front matter only if it looks like a Hub repo id (a local path is mentioned in
    the text instead, since the Hub rejects non-repo `base_model` metadata). Metric keys of the form
    `accuracy/<domain>` get their own per-domain table. Secrets in `recipe` (`hub_token`, ...) are redacted.
    """
    import yaml

    from .redaction import redact

    method_key = method.lower()
    datasets = [str(d) for d in datasets] if datasets else []
    tags = ["alignment", "trl", method_key, *(["lora", "peft"] if adapter else [])]
    front: dict[str, Any] = {}
    if _is_hub_id(base_model):
        front["base_model"] = base_model
    front["library_name"] = "peft" if adapter else "transformers"
    front["model_name"] = model_name
    front["pipeline_tag"] = "text-generation"
    front["tags"] = list(dict.fromkeys(tags))
    if datasets:
        front["datasets"] = datasets
    front_yaml = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, default_flow_style=False)
    recipe_yaml = yaml.safe_dump(_to_plain(redact(dict(recipe))), sort_keys=False, allow_unicode=True,
                                 default_flow_style=False)

    description = METHOD_DESCRIPTIONS.get(
        method_key, f"{method}: a post-training method implemented with TRL in the `alignment` toolkit."
    )
    base_text = f"[{base_model}](https://huggingface.co/{base_model})" if _is_hub_id(base_model) else f"`{base_model}`"
    if adapter:
        intro = f"This repository holds a LoRA adapter (PEFT) for {base_text}, trained"
    else:
        intro = f"This model is a fine-tuned version of {base_text}" if base_model else "This model was trained"
    intro += f" with **{method_key.upper()}**"
    intro += f" on {', '.join(f'`{d}`' for d in datasets)}." if datasets else "."

    versions = framework_versions()
    lines = [
        "---",
        front_yaml.rstrip("\n"),
        "---",
        "",
        f"# {model_name}",
        "",
        intro,
        "It was trained with the `alignment` toolkit on top of [TRL](https://github.com/huggingface/trl).",
        "",
        "## Training method",
        "",
        description,
        "",
        "## Recipe",
        "",
        "The full configuration this model was trained with:",
        "",
        "```yaml",
        recipe_yaml.rstrip("\n"),
        "```",
        "",
        *_metrics_section(metrics),
        "## How to use",
        "",
        "```python",
        *(_adapter_loading_lines(model_name, base_model) if adapter else [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model_id = "{model_name}"',
            "tokenizer = AutoTokenizer.from_pretrained(model_id)",
            "model = AutoModelForCausalLM.from_pretrained(model_id)",
        ]),
        "",
        'messages = [{"role": "user", "content": "What is 2 + 3?"}]',
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
        "outputs = model.generate(**inputs, max_new_tokens=64)",
        'print(tokenizer.decode(outputs[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
        "## Framework versions",
        "",
        *[f"- {name}: {ver}" for name, ver in versions.items()],
        "",
    ]
    return "\n".join(lines)


def _adapter_loading_lines(model_name: str, base_model: str | None) -> list[str]:
    """Load the base model, put the adapter on it (`merge_and_unload()` gives a plain model, if wanted)."""
    return [
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model_id = "{model_name}"',
        f'base = AutoModelForCausalLM.from_pretrained("{base_model or "<base model>"}")',
        "model = PeftModel.from_pretrained(base, model_id)  # .merge_and_unload() for a plain transformers model",
        "tokenizer = AutoTokenizer.from_pretrained(model_id)",
    ]


def write_model_card(output_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """Render the card with `render_model_card(**kwargs)` and write it to `output_dir/README.md`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "README.md"
    path.write_text(render_model_card(**kwargs), encoding="utf-8")
    return path


def validate_hub_model_id(*, hub_model_id: str | None, push_to_hub: bool, output_dir: str | os.PathLike) -> None:
    """ValueError at start-up, before any model is loaded, when the run would push to an invalid repo id.

    The id is `hub_model_id`, or the name of `output_dir` when that is unset and `push_to_hub` is on (the Trainer's
    and `finalize_run`'s fallback). Checked with `huggingface_hub.utils.validate_repo_id`, the client-side rules the
    upload itself applies, so a bad id fails here rather than after training.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if hub_model_id is None and not push_to_hub:
        return
    repo_id = hub_model_id if hub_model_id is not None else Path(output_dir).name
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        source = (f"`hub_model_id: {repo_id}`" if hub_model_id is not None else
                  f"`hub_model_id` is unset, so the repo is named after `output_dir` ({output_dir}), and {repo_id!r}")
        raise ValueError(
            f"{source} is not a valid Hub repo id ({str(err).rstrip('.')}). Set `hub_model_id` to `name` or "
            "`namespace/name`: letters, digits, '-', '_' and '.', at most 96 characters, not starting or ending with "
            "'-' or '.', no '--' or '..', not ending in '.git' (e.g. `hub_model_id: your-name/smollm2-135m-dpo`)."
        ) from None


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "Upload model trained with alignment",
    token: str | None = None,
    ignore_patterns: Sequence[str] | None = None,
) -> str:
    """Create `repo_id` if needed and upload `folder` to it in a single commit.

    Intermediate `checkpoint-*` folders, optimizer/scheduler/RNG states and DeepSpeed `global_step*` shards are left
    out (`DEFAULT_IGNORE_PATTERNS`, extended by `ignore_patterns`). `token` defaults to the usual resolution (`HF_TOKEN`
    or the saved login). Returns the URL of the commit (or of the repo if nothing changed and no commit was made).
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Nothing to push: {folder} is not a directory")
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    patterns = [*DEFAULT_IGNORE_PATTERNS, *(ignore_patterns or [])]
    commit = api.upload_folder(
        repo_id=repo_url.repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=patterns,
    )
    url = getattr(commit, "commit_url", None) or str(repo_url)
    return str(url)
