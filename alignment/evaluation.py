"""Held-out evaluation: greedy answers scored by the answer checker, per domain, as a table and as JSON."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from .rewards.sources import RewardModelReward, call_reward, resolve_rewards
from .rewards import get_reward_function


def prompt_texts(tokenizer, prompts: list) -> list[str]:
    """The text a model is prompted with, the way TRL's trainers build it for training.

    Conversational prompts (lists of ``{"role", "content"}`` messages) get the chat template and the generation prompt;
    standard prompts (plain strings) are used as they are. TRL's `maybe_apply_chat_template` decides, so evaluation
    prompts the model exactly as training did.
    """
    from trl.data_utils import maybe_apply_chat_template

    return [maybe_apply_chat_template({"prompt": prompt}, tokenizer)["prompt"] for prompt in prompts]


def encode_prompts(tokenizer, prompts: list):
    """`prompt_texts` tokenized as TRL's trainers tokenize them, padded on the tokenizer's `padding_side`.

    A chat template already contains the special tokens the model expects; standard prompts get the tokenizer's own
    (a BOS, for most models), as TRL's GRPOTrainer tokenizes them.
    """
    standard = all(isinstance(prompt, str) for prompt in prompts)
    return tokenizer(prompt_texts(tokenizer, prompts), return_tensors="pt", padding=True, add_special_tokens=standard)


def prompt_preview(prompt) -> str:
    """The last user turn of a conversational prompt, or a standard prompt itself (for samples in the results)."""
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: list, max_new_tokens: int = 32, batch_size: int = 32) -> list[str]:
    """Greedy completions (text of the new tokens only) for `prompts`, in batches with left padding.

    ``prompts``: conversational (lists of messages) or standard (strings), as in TRL's prompt-only datasets.
    """
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    completions: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            enc = encode_prompts(tokenizer, prompts[start : start + batch_size]).to(model.device)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            completions += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = old_side
    return completions


def default_eval_rewards(dataset) -> list[str]:
    """What scores held-out generations when a recipe names no `eval_reward_funcs`: the task suite's final-answer
    check on an `answer` column, else math-verify on a `solution` column (TRL's and open-r1's name for the gold)."""
    columns = set(dataset.column_names)
    if "answer" in columns:
        return ["accuracy_reward"]
    if "solution" in columns:
        return ["math_verify_reward"]
    raise ValueError(f"The held-out split has no `answer` or `solution` column (it has {sorted(columns)}), so no "
                     "default reward can score its generations: set `eval_reward_funcs` (a reward name, an import "
                     "path, a file `path.py:fn` or a reward model), or turn the evaluation off with "
                     "`eval_before_training: false` and `eval_after_training: false`.")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluate_answers(model, tokenizer, dataset, max_new_tokens: int = 32, batch_size: int = 32,
                     rewards: list | None = None) -> dict[str, Any]:
    """Greedy generations on the held-out ``dataset`` (a `prompt` column, string or conversational), scored by rewards.

    ``rewards``: callables with TRL's reward signature (`alignment.rewards.sources.resolve_rewards`; a reward model is
    moved to the model's device); default: the task suite's final-answer check (`accuracy_reward`, `answer` column).
    Every reward is averaged per `domain` (when the column exists) and over ``all``, leaving out completions it
    returns None for. Returns ``{"rewards": {name: {domain: mean}}, "accuracy": <the first reward's means>, "count":
    {domain: prompts}, "samples": [two per domain, with every reward's score], "seconds": float}``; for a 0/1 verifier
    ``accuracy`` is the pass rate.
    """
    if "prompt" not in dataset.column_names:
        raise ValueError(f"The evaluation dataset needs a `prompt` column; it has {dataset.column_names}.")
    if rewards is None:
        rewards = [get_reward_function(name) for name in default_eval_rewards(dataset)]
    for reward in rewards:
        if isinstance(reward, RewardModelReward):
            reward.to(model.device)
    start = time.time()
    prompts = list(dataset["prompt"])
    domains = list(dataset["domain"]) if "domain" in dataset.column_names else ["all"] * len(prompts)
    columns = {name: list(dataset[name]) for name in dataset.column_names if name != "prompt"}
    completions = generate_greedy(model, tokenizer, prompts, max_new_tokens, batch_size)
    scores = {reward.__name__: call_reward(reward, prompts, completions, columns, tokenizer) for reward in rewards}

    count: dict[str, int] = defaultdict(int)
    for domain in domains:
        count[domain] += 1
    means: dict[str, dict[str, float | None]] = {}
    for name, values in scores.items():
        by_domain: dict[str, list[float]] = defaultdict(list)
        for domain, value in zip(domains, values):
            if value is not None:
                by_domain[domain].append(value)
        means[name] = {domain: _mean(by_domain[domain]) for domain in sorted(count)}
        means[name]["all"] = _mean([value for value in values if value is not None])
    samples, shown = [], defaultdict(int)
    for i, (prompt, domain, completion) in enumerate(zip(prompts, domains, completions)):
        shown[domain] += 1
        if shown[domain] <= 2:
            samples.append({"domain": domain, "prompt": prompt_preview(prompt), "completion": completion,
                            **{key: columns[key][i] for key in ("answer", "solution") if key in columns},
                            "scores": {name: values[i] for name, values in scores.items()}})
    count = dict(sorted(count.items())) | {"all": len(prompts)}
    return {"rewards": means, "accuracy": means[rewards[0].__name__], "count": count, "samples": samples,
            "seconds": round(time.time() - start, 2)}


def prepare_evaluation(tokenizer, dataset, reward_specs: list[str] | None = None,
                       reward_kwargs: dict | None = None) -> list:
    """Check before training that `evaluate_answers` can run on ``dataset`` and return its rewards, resolved.

    The first example's prompt is built and tokenized as generation will do it, and every reward (``reward_specs``,
    the same strings as GRPO's `reward_funcs`; default `default_eval_rewards`) is resolved and called once on it: a
    layout, a column or a reward that the evaluation cannot use fails now, not after training.
    """
    if "prompt" not in dataset.column_names:
        raise ValueError(f"The evaluation dataset needs a `prompt` column; it has {dataset.column_names}.")
    if len(dataset) == 0:
        raise ValueError("The evaluation dataset is empty: give a non-empty test split or set `eval_after_training: "
                         "false` and `eval_before_training: false`.")
    first = dataset[0]
    try:
        (text,) = prompt_texts(tokenizer, [first["prompt"]])
        if not isinstance(text, str):  # a tokenizer would read a list of ints as token ids and generate anyway
            raise TypeError(f"`prompt` is a {type(first['prompt']).__name__}")
        tokenizer(text)
    except Exception as error:
        raise ValueError(f"The held-out evaluation cannot read the first test example ({error!r}): `prompt` must be "
                         "a string or a list of {role, content} messages. Fix the test split, or turn the evaluation "
                         "off with `eval_before_training: false` and `eval_after_training: false`.") from error
    specs = list(reward_specs) if reward_specs else default_eval_rewards(dataset)
    return resolve_rewards(specs, reward_kwargs if reward_specs else None, example=first)


def format_accuracy_table(results: dict[str, dict[str, Any]]) -> str:
    """Plain-text tables, one per reward: a row per domain, a column per named result (e.g. before / after).

    Scores in [0, 1] (verifiers: pass rates) print as percentages, others (reward models) as numbers.
    """
    names = list(results)
    tables = {}
    for result in results.values():
        for reward, means in result.get("rewards", {"accuracy": result["accuracy"]}).items():
            tables.setdefault(reward, {})
    blocks = []
    for reward in tables:
        columns = {name: r.get("rewards", {"accuracy": r["accuracy"]}).get(reward, {}) for name, r in results.items()}
        values = [v for means in columns.values() for v in means.values() if v is not None]
        percent = all(0.0 <= v <= 1.0 for v in values)
        domains = sorted({d for means in columns.values() for d in means if d != "all"}) + ["all"]
        header = f"{reward[:15]:<16}{'n':>5}" + "".join(f"{name:>10}" for name in names)
        lines = [header, "-" * len(header)]
        for domain in domains:
            n = next((r["count"].get(domain) for r in results.values() if domain in r["count"]), 0)
            cells = ""
            for means in columns.values():
                value = means.get(domain)
                cells += (f"{'-':>10}" if value is None else f"{100 * value:>9.1f}%" if percent else f"{value:>10.3f}")
            lines.append(f"{domain:<16}{n:>5}" + cells)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_eval_results(output_dir: str | Path, results: dict[str, Any], filename: str = "eval_results.json") -> Path:
    path = Path(output_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path
