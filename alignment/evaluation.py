"""Held-out evaluation: greedy answers scored by the answer checker, per domain, as a table and as JSON."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 32, batch_size: int = 32) -> list[str]:
    """Greedy completions (text of the new tokens only) for chat `prompts`, in batches with left padding."""
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    completions: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [
                tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                for p in prompts[start : start + batch_size]
            ]
            # The chat template already contains any special tokens the model expects.
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
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
            samples.append({"domain": domain, "prompt": prompt[-1]["content"], "answer": answer,
                            "completion": completion, "correct": bool(ok)})
    accuracy = {domain: correct[domain] / count[domain] for domain in sorted(count)}
    accuracy["all"] = sum(correct.values()) / max(1, sum(count.values()))
    count = dict(sorted(count.items())) | {"all": sum(count.values())}
    return {"accuracy": accuracy, "count": count, "samples": samples, "seconds": round(time.time() - start, 2)}


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
