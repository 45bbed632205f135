"""Model cards (README.md) that the Hub accepts, built with `huggingface_hub.ModelCardData` and `ModelCard`.

The metadata (YAML front matter) carries only what the Hub validates and links: `base_model` as a Hub model id (an
embedded alias such as `smollm2-135m-instruct`, or a directory converted from one, maps back to the Hub id it was
made from; any other local directory is described in the body instead), `datasets` as Hub dataset ids only (local
files and the embedded `task-suite` are described in the body), a `license` from the Hub's list, `library_name`,
`pipeline_tag`, tags (`trl`, `alignment`, the method family `dpo` / `kto` / `grpo` / `sft` / `reward-model`, the loss or
estimator names) and a `model-index` of the final model's held-out results (`huggingface_hub.EvalResult`). The body
says in plain words what was trained how, on what, shows the evaluation before/after, embeds the training plots
(`output_dir/plots/*.png`, linked relatively: the push uploads the folder), gives a loading snippet with the full
repo id, the recipe (secrets redacted) and the BibTeX of the method papers.

Paper vs code: TRL's own `generate_model_card` passes `licence="license"` (sic) to `ModelCardData`, which writes an
unknown `licence:` key and no license; here the license is the base model's when the toolkit knows it (the embedded
models record theirs), else the recipe's `hub_license`, else `unknown`, one of the Hub's identifiers.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .citations import TRL_CITATION, citations_for
from .data import TASK_SUITE  # the constant only: `alignment.data` imports its modules lazily
from .modeling.models import EMBEDDED_MODELS, read_marker
from .redaction import redact

__all__ = [
    "HUB_LICENSES",
    "METHOD_FAMILIES",
    "MethodFamily",
    "check_hub_license",
    "describe_method",
    "framework_versions",
    "hub_dataset_ids",
    "plot_files",
    "render_model_card",
    "resolve_base_model",
    "write_model_card",
]

# The license identifiers the Hub accepts in card metadata, as its validator lists them ("license" must be one of
# [...], huggingface_hub issue #4218, 2026-05); hub-docs `repositories-licenses.md` documents most of them.
HUB_LICENSES: frozenset[str] = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl
openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 grok2-community gemma unknown
other
""".split())

_FRAMEWORKS = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")
# `accuracy/<domain>` (also `eval/accuracy/<domain>`, `eval_accuracy/<domain>`) -> per-domain accuracy table.
_DOMAIN_ACCURACY_RE = re.compile(r"^(?:eval[/_])?accuracy/(?P<domain>[^/]+)$")
# Trainer bookkeeping among `evaluate()`'s metrics: not results of the model.
_NOT_A_METRIC = re.compile(r"(^(eval_)?epoch$|_runtime$|_per_second$)")
# Extensions that make a `dataset_name` a local file even when the file is not there any more.
_DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt", ".tsv")


@dataclass(frozen=True)
class MethodFamily:
    """One kind of training, for the card.

    Attributes:
        tag: the Hub tag of the family (`dpo`, `grpo`, `sft`, `reward-model`).
        title: the family in plain words, for the first sentence.
        description: what it optimises, for "Training method".
        pipeline_tag: the Hub task of the trained model.
        registry: whose names the method string lists (`loss`: preference losses, `estimator`: advantage
            estimators), described one by one from their docstrings; None for none.
        components: what those names are, as the heading of their list.
    """

    tag: str
    title: str
    description: str
    pipeline_tag: str = "text-generation"
    registry: str | None = None
    components: str = ""


METHOD_FAMILIES: dict[str, MethodFamily] = {
    "dpo": MethodFamily(
        tag="dpo", title="Direct Preference Optimization (DPO family)", registry="loss",
        description="Direct Preference Optimization (DPO) and its variants: the model was trained on pairs of a "
        "preferred (chosen) and a dispreferred (rejected) completion of the same prompt; the loss raises the "
        "likelihood of the chosen completion relative to the rejected one, measured against a frozen reference model "
        "(the starting checkpoint), without a separate reward model.",
        components="Loss terms",
    ),
    "grpo": MethodFamily(
        tag="grpo", title="Group Relative Policy Optimization (GRPO family)", registry="estimator",
        description="Group Relative Policy Optimization (GRPO) and its variants: for each prompt the model sampled a "
        "group of completions, reward functions scored them, and a clipped policy-gradient step moved the model "
        "towards the completions that scored above the rest of their group, optionally with a KL penalty to the "
        "reference model.",
        components="Advantage estimator",
    ),
    "kto": MethodFamily(
        tag="kto", title="Kahneman-Tversky Optimization (KTO family, unpaired preferences)", registry="unpaired",
        description="Kahneman-Tversky Optimization (KTO) and TRL's other unpaired losses: the model was trained on "
        "single completions labelled desirable or undesirable (no pairs); the loss raises the likelihood of desirable "
        "completions and lowers that of undesirable ones, relative to a frozen reference model (the starting "
        "checkpoint) and, for KTO, to a reference point estimated from the KL divergence to it.",
        components="Loss",
    ),
    "sft": MethodFamily(
        tag="sft", title="supervised fine-tuning (SFT)",
        description="Supervised fine-tuning (SFT): the model was trained to reproduce the reference completions "
        "given their prompts (cross-entropy on the completion tokens only).",
    ),
    "reward": MethodFamily(
        tag="reward-model", title="reward modelling", pipeline_tag="text-classification", registry="reward_invariance",
        description="Reward modelling: a scalar head on the model was trained so that chosen completions score "
        "higher than rejected ones (Bradley-Terry loss, TRL's `RewardTrainer`). The model scores a conversation; it "
        "does not generate.",
        components="Domain-invariance objective",
    ),
}
# `alignment.commands.cli` names a group-RL run `group-rl (<advantage estimator>)`, and the reward step a run with a
# domain-invariance objective `reward (<objective>)`.
_NAMED_RUN = re.compile(r"^(?P<step>group-rl|reward) \((?P<name>[^)]+)\)$")
_NAMED_RUN_FAMILY = {"group-rl": "grpo", "reward": "reward"}


def _registry_summaries(registry: str | None) -> dict[str, str]:
    """name -> the first line of its docstring, for the preference losses or the advantage estimators."""
    # Lazy: importing a registry imports every loss / estimator module, which only a card needs; the recipe
    # dataclasses import this module for `check_hub_license` at every parse.
    if registry == "loss":
        from .losses.registry import PREFERENCE_LOSSES

        return {spec.name: spec.summary for spec in PREFERENCE_LOSSES}
    if registry == "estimator":
        from .advantages.registry import ADVANTAGE_ESTIMATORS

        return {spec.name: spec.summary for spec in ADVANTAGE_ESTIMATORS}
    if registry == "unpaired":  # imported here like the two above: the card module stays free of torch until used
        from .unpaired import UNPAIRED_LOSSES

        return {spec.name: spec.summary for spec in UNPAIRED_LOSSES}
    if registry == "reward_invariance":
        from .reward_objectives import REWARD_INVARIANCE

        return {spec.name: spec.summary for spec in REWARD_INVARIANCE}
    return {}


def describe_method(method: str) -> tuple[str | None, list[str]]:
    """``(family key in METHOD_FAMILIES or None, component names)`` of a run's method string.

    The entry points name a run by its preference losses (`sigmoid`, `sigmoid+sft`: the DPO family), by its unpaired
    loss (`kto`, `apo_zero_unpaired`: the KTO family), by `group-rl (<estimator>)` (the GRPO family), by
    `reward (<objective>)` (a reward model with a domain-invariance objective), or `sft` / `reward`; a family key
    itself (`dpo`, `grpo`) is accepted.
    """
    key = method.strip().lower()
    named = _NAMED_RUN.match(key)
    if named:
        return _NAMED_RUN_FAMILY[named["step"]], [named["name"]]
    if key in _registry_summaries("unpaired"):  # `alignment.commands.cli.kto_main` names a run by its unpaired loss
        return "kto", [key]
    if key in METHOD_FAMILIES:
        return key, []
    names = [name for name in key.split("+") if name]
    if names and all(name in _registry_summaries("loss") for name in names):
        return "dpo", names
    return None, []


def check_hub_license(value: str | None, field_name: str = "hub_license") -> None:
    """ValueError unless ``value`` is None or a license identifier the Hub accepts (`HUB_LICENSES`)."""
    if value is not None and value not in HUB_LICENSES:
        raise ValueError(
            f"`{field_name}: {value}` is not a license the Hub knows; use one of its identifiers "
            f"(https://huggingface.co/docs/hub/repositories-licenses), e.g. apache-2.0, mit, cc-by-4.0, llama3.1, "
            f"or `other`. Valid: {', '.join(sorted(HUB_LICENSES))}."
        )


def _valid_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_base_model(name_or_path: str | None) -> tuple[str | None, str | None, str | None]:
    """``(Hub id, license, how the body describes it)`` of the model a run started from.

    An embedded alias (`smollm2-135m-instruct`), or a directory converted from one (its `alignment_embedded.json`
    marker names the alias), is the Hub model the GGUF was made from, with its license. A Hub id is itself (license
    unknown here). Any other local directory has no Hub id: only the body mentions it.
    """
    if not name_or_path:
        return None, None, None
    name = str(name_or_path)
    alias = name if name in EMBEDDED_MODELS else None
    if alias is None and os.path.isdir(name):
        marker = read_marker(name) or {}
        alias = marker.get("alias") if marker.get("alias") in EMBEDDED_MODELS else None
    if alias is not None:
        spec = EMBEDDED_MODELS[alias]
        note = (f"converted to float32 from the quantized GGUF of it that the `{spec.distribution}` package ships, "
                f"alias `{alias}`")
        return spec.hub_id, spec.license, note
    if os.path.exists(name) or not _valid_repo_id(name):
        return None, None, f"a local checkpoint, `{name}` (not on the Hub)"
    known = {spec.hub_id: spec.license for spec in EMBEDDED_MODELS.values() if spec.hub_id}
    return name, known.get(name), None


def _is_local_data(name: str) -> bool:
    return os.path.exists(name) or name.endswith(_DATA_SUFFIXES) or not _valid_repo_id(name)


def _recipe_dataset_sources(recipe: Mapping[str, Any]) -> list[str]:
    """Dataset paths a recipe names: `dataset_name`, TRL's `datasets[].path`, the entries of a mixture section
    (`dataset_mixture`, `share_mixture`: `datasets[].path`, or `.id` in the alignment-handbook's layout)."""
    sections = [recipe.get("datasets")] + [section.get("datasets") for key in ("dataset_mixture", "share_mixture")
                                           if isinstance(section := recipe.get(key), Mapping)]
    sources = [recipe.get("dataset_name")]
    for entries in sections:
        if isinstance(entries, Sequence) and not isinstance(entries, str):
            sources += [entry.get("path") or entry.get("id") for entry in entries if isinstance(entry, Mapping)]
    return [str(source) for source in sources if source]


def hub_dataset_ids(sources: Sequence[str]) -> list[str]:
    """The entries of ``sources`` that are Hub dataset ids (not `task-suite`, not a local path or file)."""
    return [s for s in dict.fromkeys(sources) if s != TASK_SUITE and not _is_local_data(s)]


def _describe_dataset(source: str, recipe: Mapping[str, Any]) -> str:
    if source == TASK_SUITE:
        domains = recipe.get("task_domains")
        which = f"domains: {', '.join(map(str, domains))}" if domains else "all domains"
        return (f"the toolkit's embedded verifiable task suite (`task-suite`, {which}): generated locally, not a Hub "
                "dataset, so not listed in the metadata")
    if source in hub_dataset_ids([source]):
        return f"[{source}](https://huggingface.co/datasets/{source})"
    return f"local data, `{source}` (not on the Hub, so not listed in the metadata)"


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


def _number(value: Any) -> float | int | None:
    """A finite Python number, or None (the Hub's model-index wants plain numbers)."""
    value = _to_plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    value = _to_plain(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(title: str, header: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"title": title, "header": header, "rows": [[_fmt(cell) if not isinstance(cell, str) else cell
                                                         for cell in row] for row in rows]}


def _result_tables(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Tables of an `eval_results.json`: rewards per domain before/after, preference and reward-model metrics."""
    tables = []
    before, after = results.get("before") or {}, results.get("after") or {}
    if before or after:
        rewards = list(dict.fromkeys([*(after.get("rewards") or {}), *(before.get("rewards") or {})]))
        count = after.get("count") or before.get("count") or {}
        rows = []
        for reward in rewards:
            b, a = (before.get("rewards") or {}).get(reward, {}), (after.get("rewards") or {}).get(reward, {})
            rows += [[reward, domain, b.get(domain), a.get(domain), count.get(domain)]
                     for domain in dict.fromkeys([*a, *b])]
        tables.append(_table("Held-out generations (greedy), mean reward per domain",
                             ["Reward", "Domain", "Before", "After", "Prompts"], rows))
    for key, title in (("preference", "Held-out preference pairs"), ("eval", "Held-out evaluation")):
        numeric = {k: v for k, v in (results.get(key) or {}).items()
                   if _number(v) is not None and not _NOT_A_METRIC.search(k)}
        if numeric:
            tables.append(_table(title, ["Metric", "Value"], [[k, v] for k, v in numeric.items()]))
    reward = results.get("reward") or {}
    accuracy, margin = reward.get("pairwise_accuracy") or {}, reward.get("mean_margin") or {}
    if accuracy:
        tables.append(_table("Pairwise accuracy of the reward model, r(chosen) > r(rejected)",
                             ["Domain", "Pairwise accuracy", "Mean margin"],
                             [[d, accuracy[d], margin.get(d)] for d in accuracy]))
    return tables


def _metric_tables(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A flat `{name: value}` mapping as a table; `accuracy/<domain>` keys get their own per-domain table."""
    per_domain, others = {}, {}
    for key, value in metrics.items():
        match = _DOMAIN_ACCURACY_RE.match(str(key))
        (per_domain if match else others)[match["domain"] if match else str(key)] = value
    tables = [_table("Metrics", ["Metric", "Value"], [[k, v] for k, v in others.items()])] if others else []
    if per_domain:
        tables.append(_table("Accuracy per domain", ["Domain", "Accuracy"], [[d, v] for d, v in per_domain.items()]))
    return tables


def _eval_dataset(sources: Sequence[str]) -> tuple[str, str]:
    """``(type, name)`` of the held-out data for the model-index: the Hub id when there is one."""
    if len(sources) != 1:
        return "mixture", f"held-out split of a mixture of {len(sources)} datasets"
    source = sources[0]
    if source == TASK_SUITE:
        return TASK_SUITE, "alignment task suite (held-out split)"
    if hub_dataset_ids([source]):
        return source, source
    name = Path(source.rstrip("/")).name or "local-data"
    return name, f"{name} (local data)"


def _eval_results(results: Mapping[str, Any], sources: Sequence[str], split: str) -> list:
    """`EvalResult`s of the trained model: mean reward per domain after training, preference and reward-model
    metrics. Results from before training describe the base model, so they stay in the body."""
    from huggingface_hub import EvalResult

    dataset_type, dataset_name = _eval_dataset(sources)
    common = dict(dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=split,
                  task_name="Held-out evaluation")
    out = []
    for reward, means in ((results.get("after") or {}).get("rewards") or {}).items():
        for domain, value in means.items():
            if _number(value) is not None:
                out.append(EvalResult(task_type="text-generation", metric_type=reward, metric_config=domain,
                                      metric_name=f"{reward}/{domain}", metric_value=_number(value), **common))
    for metric, value in {**(results.get("preference") or {}), **(results.get("eval") or {})}.items():
        if _number(value) is not None and not _NOT_A_METRIC.search(metric):
            out.append(EvalResult(task_type="text-generation", metric_type=metric, metric_name=metric,
                                  metric_value=_number(value), **common))
    for domain, value in ((results.get("reward") or {}).get("pairwise_accuracy") or {}).items():
        if _number(value) is not None:
            out.append(EvalResult(task_type="text-classification", metric_type="accuracy", metric_config=domain,
                                  metric_name=f"pairwise_accuracy/{domain}", metric_value=_number(value), **common))
    return out


def plot_files(output_dir: str | os.PathLike) -> list[str]:
    """`plots/*.png` under ``output_dir``, as paths relative to it (what the card links; the push uploads them)."""
    return sorted(p.relative_to(output_dir).as_posix() for p in Path(output_dir).glob("plots/*.png") if p.is_file())


def _usage(repo_id: str, base: str | None, family: str | None, adapter: bool) -> str:
    """A loading snippet: the PEFT adapter on its base, a reward model scoring a chat, or a chat generation."""
    load = f'model_id = "{repo_id}"\n'
    if adapter:
        load = ("from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n" + load
                + f'base = AutoModelForCausalLM.from_pretrained("{base or "<base model>"}")\n'
                "model = PeftModel.from_pretrained(base, model_id)  # .merge_and_unload() for a plain transformers "
                "model\ntokenizer = AutoTokenizer.from_pretrained(model_id)\n")
    elif family == "reward":
        return ("import torch\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n" + load
                + "tokenizer = AutoTokenizer.from_pretrained(model_id)\n"
                "model = AutoModelForSequenceClassification.from_pretrained(model_id)\n\n"
                'chat = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]\n'
                'inputs = tokenizer.apply_chat_template(chat, return_tensors="pt", return_dict=True)\n'
                "with torch.no_grad():\n    print(model(**inputs).logits[0, 0].item())  # higher = preferred")
    else:
        load = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n" + load
                + "tokenizer = AutoTokenizer.from_pretrained(model_id)\n"
                "model = AutoModelForCausalLM.from_pretrained(model_id)\n")
    return (load + '\nmessages = [{"role": "user", "content": "What is 2 + 3?"}]\n'
            'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
            "return_dict=True)\noutputs = model.generate(**inputs, max_new_tokens=64)\n"
            'print(tokenizer.decode(outputs[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))')


CARD_TEMPLATE = """\
---
{{ card_data }}
---

# {{ title }}

{{ intro }}
It was trained with the `alignment` toolkit on top of [TRL](https://github.com/huggingface/trl).

## Training method

{{ method_text }}
{% if components %}
{{ components_label }}:
{% endif %}
{%- for name, summary in components %}
- `{{ name }}`: {{ summary }}
{%- endfor %}

## Training data
{% for line in data_lines %}
- {{ line }}
{%- endfor %}
{% if plots %}
## Training curves
{% for plot in plots %}
![{{ plot }}]({{ plot }})
{%- endfor %}
{% endif %}
## Evaluation results
{% for table in tables %}
### {{ table.title }}

| {{ table.header | join(" | ") }} |
|{% for _ in table.header %}---|{% endfor %}
{%- for row in table.rows %}
| {{ row | join(" | ") }} |
{%- endfor %}
{% else %}
No evaluation metrics were recorded for this run.
{% endfor %}
{%- if errors %}
Evaluations that failed after training: {{ errors | join("; ") }}.
{% endif %}
## How to use

```python
{{ usage }}
```

## License

{{ license_text }}

## Recipe

The full configuration this model was trained with (secrets redacted):

```yaml
{{ recipe_yaml }}
```

## Framework versions
{% for name, version in versions %}
- {{ name }}: {{ version }}
{%- endfor %}

## Citations

{% if citations %}The method:

```bibtex
{{ citations | join("\n\n") }}
```

{% endif %}TRL:

```bibtex
{{ trl_citation }}
```
"""


def render_model_card(
    *,
    model_name: str,
    base_model: str | None,
    method: str,
    recipe: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    datasets: Sequence[str] | None = None,
    adapter: bool = False,
    license: str | None = None,
    plots: Sequence[str] = (),
) -> str:
    """The README.md of a trained model, front matter from `ModelCardData`, body from `CARD_TEMPLATE` (Jinja).

    Args:
        model_name: the repo id (`my-org/my-dpo-model`): the title, the `model-index` name and, in full, the id in the
            loading snippet.
        base_model: what the run started from: a Hub id, an embedded alias, a directory (`resolve_base_model`).
        method: the run's method string (`sigmoid+sft`, `group-rl (grpo)`, `sft`, `reward`; `describe_method`).
        recipe: the recipe, printed as YAML with its secrets redacted; its dataset fields join ``datasets``.
        metrics: extra flat metrics for the body (`accuracy/<domain>` keys get a per-domain table).
        results: the run's `eval_results.json` content: body tables, and the final model's numbers in `model-index`.
        datasets: the training data (Hub ids go to the metadata, the rest is described in the body).
        adapter: the folder holds a PEFT adapter of ``base_model`` (`library_name: peft`, `lora`/`peft` tags).
        license: a Hub license identifier (the recipe's `hub_license`); default: the base model's when the toolkit
            knows it, else `unknown`.
        plots: PNG paths relative to the card (`plot_files`), embedded under "Training curves".
    """
    import yaml
    from huggingface_hub import ModelCard, ModelCardData

    check_hub_license(license, "license")
    family_key, names = describe_method(method)
    family = METHOD_FAMILIES.get(family_key)
    summaries = _registry_summaries(family.registry if family else None)
    components = [(name, summaries.get(name, "")) for name in names]
    hub_base, base_license, base_note = resolve_base_model(base_model)
    sources = list(dict.fromkeys([*(str(d) for d in datasets or ()), *_recipe_dataset_sources(recipe)]))
    license_id = license or base_license or "unknown"
    results = results or {}

    eval_results = _eval_results(results, sources, str(recipe.get("dataset_test_split", "test"))) or None
    card_data = ModelCardData(
        base_model=hub_base,
        datasets=hub_dataset_ids(sources) or None,
        eval_results=eval_results,
        library_name="peft" if adapter else "transformers",
        license=license_id,
        model_name=model_name,
        pipeline_tag=family.pipeline_tag if family else "text-generation",
        tags=list(dict.fromkeys(["trl", "alignment", *([family.tag] if family else []), *names,
                                 *(["lora", "peft"] if adapter else [])])),
    )

    base_text = (f"[{hub_base}](https://huggingface.co/{hub_base})" if hub_base else "") + (
        f" ({base_note})" if hub_base and base_note else base_note or "")
    how = f" with {family.title}" if family else f" with `{method}`"
    if adapter:
        intro = f"This repository holds a LoRA adapter (PEFT) for {base_text or 'its base model'}, trained{how}."
    else:
        intro = (f"This model is {base_text} fine-tuned{how}." if base_text else f"This model was trained{how}.")
    if license is not None:
        license_text = f"`{license_id}`, as set by the recipe's `hub_license`."
    elif base_license is not None:
        license_text = f"`{license_id}`, the license of the base model {hub_base}."
    else:
        license_text = ("`unknown`: the toolkit does not know the base model's license. Set `hub_license` in the "
                        "recipe to it (a Hub license identifier) and push again.")
    tables = _result_tables(results) + _metric_tables(metrics or {})
    errors = [f"`{name}` ({error})" for name, error in sorted((results.get("evaluation_errors") or {}).items())]
    card = ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        title=model_name,
        intro=intro,
        method_text=family.description if family else f"`{method}`, a method of the `alignment` toolkit.",
        components=components,
        components_label=family.components if family else "",
        data_lines=[_describe_dataset(s, recipe) for s in sources] or ["not recorded"],
        plots=list(plots),
        tables=tables,
        errors=errors,
        usage=_usage(model_name, hub_base or (str(base_model) if base_model else None), family_key, adapter),
        license_text=license_text,
        recipe_yaml=yaml.safe_dump(_to_plain(redact(dict(recipe))), sort_keys=False, allow_unicode=True,
                                   default_flow_style=False).rstrip("\n"),
        versions=list(framework_versions().items()),
        citations=citations_for(summary for _, summary in components),
        trl_citation=TRL_CITATION,
    )
    return str(card) if str(card).endswith("\n") else f"{card}\n"


def write_model_card(output_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """Write `render_model_card(**kwargs)` to `output_dir/README.md`, embedding `output_dir/plots/*.png` (unless
    ``plots`` is given)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("plots", plot_files(output_dir))
    path = output_dir / "README.md"
    path.write_text(render_model_card(**kwargs), encoding="utf-8")
    return path
