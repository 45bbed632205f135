"""Held-out evaluation: greedy answers scored by the answer checker, per domain, as a table and as JSON."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch


def prompt_texts(tokenizer, prompts: list) -> list[str]:
    """The text a model is prompted with, the way TRL's trainers build it for training.

    Conversational prompts (lists of ``{"role", "content"}`` messages) get the chat template and the generation prompt;
    standard prompts (plain strings) are used as they are. TRL's `maybe_apply_chat_template` decides, so evaluation
    prompts the model exactly as training did.
    """
    from trl.data_utils import maybe_apply_chat_template

    return [maybe_apply_chat_template({"prompt": prompt}, tokenizer)["prompt"] for prompt in prompts]


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
            batch = prompts[start : start + batch_size]
            # A chat template already contains the special tokens the model expects; standard prompts get the
            # tokenizer's own (a BOS, for most models), as TRL's GRPOTrainer tokenizes them.
            standard = all(isinstance(prompt, str) for prompt in batch)
            enc = tokenizer(prompt_texts(tokenizer, batch), return_tensors="pt", padding=True,
                            add_special_tokens=standard).to(model.device)
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


def evaluate_answers(model, tokenizer, dataset, max_new_tokens: int = 32, batch_size: int = 32) -> dict[str, Any]:
    """Accuracy of greedy answers on a prompt-only dataset with `prompt`, `answer` and `domain` columns.

    Returns ``{"accuracy": {domain: float, ..., "all": float}, "count": {...}, "samples": [...], "seconds": float}``.
    """
    from .data import is_correct

    for column in ("prompt", "answer"):
        if column not in dataset.column_names:
            raise ValueError(f"The evaluation dataset needs a `{column}` column; it has {dataset.column_names}.")
    start = time.time()
    prompts = list(dataset["prompt"])
    answers = list(dataset["answer"])
    domains = list(dataset["domain"]) if "domain" in dataset.column_names else ["all"] * len(prompts)
    completions = generate_greedy(model, tokenizer, prompts, max_new_tokens, batch_size)
    correct: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    samples = []
    for prompt, answer, domain, completion in zip(prompts, answers, domains, completions):
        ok = is_correct(completion, answer)
        correct[domain] += ok
        count[domain] += 1
        if count[domain] <= 2:
            samples.append({"domain": domain, "prompt": prompt_preview(prompt), "answer": answer,
                            "completion": completion, "correct": bool(ok)})
    accuracy = {domain: correct[domain] / count[domain] for domain in sorted(count)}
    accuracy["all"] = sum(correct.values()) / max(1, sum(count.values()))
    count = dict(sorted(count.items())) | {"all": sum(count.values())}
    return {"accuracy": accuracy, "count": count, "samples": samples, "seconds": round(time.time() - start, 2)}


def check_answer_evaluation(tokenizer, dataset) -> None:
    """Fail before training if `evaluate_answers` cannot run on ``dataset``: columns, prompt format, answer checker.

    Builds the prompt text of the first example and scores an empty and a non-empty completion against its answer:
    everything `evaluate_answers` does except generating, so a layout it cannot read fails now, not after training.
    """
    from .data import is_correct

    for column in ("prompt", "answer"):
        if column not in dataset.column_names:
            raise ValueError(f"The evaluation dataset needs a `{column}` column; it has {dataset.column_names}.")
    if len(dataset) == 0:
        raise ValueError("The evaluation dataset is empty: give a non-empty test split or set `eval_after_training: "
                         "false` and `eval_before_training: false`.")
    first = dataset[0]
    try:
        (text,) = prompt_texts(tokenizer, [first["prompt"]])
        if not isinstance(text, str):  # a tokenizer would read a list of ints as token ids and generate anyway
            raise TypeError(f"`prompt` is a {type(first['prompt']).__name__}")
        tokenizer(text)
        is_correct("0", first["answer"])
    except Exception as error:
        raise ValueError(f"The held-out answer evaluation cannot read the first test example ({error!r}): `prompt` "
                         "must be a string or a list of {role, content} messages and `answer` a string. Fix the "
                         "test split, or turn the evaluation off with `eval_before_training: false` and "
                         "`eval_after_training: false`.") from error


def format_accuracy_table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one row per domain, one column per named result (e.g. before / after)."""
    names = list(results)
    domains = sorted({d for r in results.values() for d in r["accuracy"] if d != "all"}) + ["all"]
    header = f"{'domain':<16}{'n':>5}" + "".join(f"{name:>10}" for name in names)
    lines = [header, "-" * len(header)]
    for domain in domains:
        n = next((r["count"].get(domain) for r in results.values() if domain in r["count"]), 0)
        cells = "".join(
            f"{100 * r['accuracy'][domain]:>9.1f}%" if domain in r["accuracy"] else f"{'-':>10}" for r in results.values()
        )
        lines.append(f"{domain:<16}{n:>5}" + cells)
    return "\n".join(lines)


def write_eval_results(output_dir: str | Path, results: dict[str, Any], filename: str = "eval_results.json") -> Path:
    path = Path(output_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path
