"""On-policy preference pairs from prompts and a verifier: sample K completions, score them, pair them.

The loop of iterative DPO / IRPO (Pang et al., arXiv 2404.19733; Xiong et al., arXiv 2312.11456): for each prompt,
sample ``K`` completions from the current model, score each with reward functions (a verifier such as the math
reward, a registry reward, a user's function or a reward model), and keep pairs whose scores differ:

* ``best_vs_worst``: one pair per prompt, the highest-scoring completion against the lowest (ties broken by sample
  order), kept when ``score(best) − score(worst) ≥ min_margin``; the usual on-policy DPO construction.
* ``pass_fail``: every (passing, failing) combination with ``score ≥ threshold`` vs ``score < threshold``, at most
  ``max_pairs_per_prompt`` per prompt (IRPO pairs correct against incorrect reasoning chains).

Each pair carries ``margin = score(chosen) − score(rejected)`` (MADPO reads it), both scores, and the prompt's other
columns (``answer``, ``domain``, ...). Prompts whose completions all score the same give no pair; the count is
reported. Scores are the weighted sum of the rewards (TRL's convention: a reward returning None for a completion, i.e.
"not applicable", contributes nothing; a completion that no reward scores is left out of pairing).

With ``record_policy_logps`` the generator also writes, for every pair, the log-prob of each response under the
policy that sampled it (`policy_sequence_logps`: ``round_chosen_logps`` / ``round_rejected_logps``, the π_t columns
INPO reads), computed by one teacher-forced forward of the pair as the preference trainer tokenizes it.

Sampling uses transformers' ``generate`` (``do_sample=True``, ``num_return_sequences=K``), batched over prompts with
left padding, seeded; prompts are built exactly as the trainers build them (`alignment.evaluation.prompt_texts`).
Written by hand because TRL has no offline sample-and-pair step (its online DPO trainer pairs inside training).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from .evaluation import encode_prompts, prompt_texts
from .rewards.sources import call_reward

STRATEGIES = ("best_vs_worst", "pass_fail")
# The columns `record_policy_logps` adds to each pair: log π_t of the chosen and of the rejected response.
POLICY_LOGPS_COLUMNS = ("round_chosen_logps", "round_rejected_logps")


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence, *, num_samples: int, max_new_tokens: int = 128,
                       temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 8,
                       seed: int | None = None) -> list[list[str]]:
    """``num_samples`` sampled completions (text of the new tokens) for each prompt; ``[len(prompts)][num_samples]``."""
    if num_samples < 2:
        raise ValueError(f"`num_samples` must be at least 2 to form pairs, got {num_samples}.")
    if seed is not None:
        torch.manual_seed(seed)
    model.eval()
    old_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    completions: list[list[str]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            enc = encode_prompts(tokenizer, list(prompts[start : start + batch_size])).to(model.device)
            out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p, top_k=None,
                                 max_new_tokens=max_new_tokens, num_return_sequences=num_samples,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            completions += [texts[i : i + num_samples] for i in range(0, len(texts), num_samples)]
    finally:
        tokenizer.padding_side = old_side
    return completions


def sample_completions_vllm(model_path: str, tokenizer, prompts: Sequence, *, num_samples: int,
                            max_new_tokens: int = 128, temperature: float = 1.0, top_p: float = 1.0,
                            seed: int | None = None, gpu_memory_utilization: float = 0.9) -> list[list[str]]:
    """`sample_completions` with vLLM's offline engine (``vllm.LLM``), for a GPU machine with vLLM installed.

    The prompts are tokenized here, exactly as the `generate` path and TRL's trainers tokenize them (chat template for
    conversational prompts, the tokenizer's special tokens for standard ones), and handed to vLLM as token ids, so
    vLLM adds no second BOS. ``n = num_samples`` samples per prompt with one ``seed``. Not exercised by the test suite
    (it runs on CPU without vLLM); `generate_pairs.py` refuses `use_vllm: true` before loading anything when vLLM or a
    CUDA device is missing.
    """
    from vllm import LLM, SamplingParams

    if num_samples < 2:
        raise ValueError(f"`num_samples` must be at least 2 to form pairs, got {num_samples}.")
    ids = [tokenizer(text, add_special_tokens=isinstance(prompt, str))["input_ids"]
           for prompt, text in zip(prompts, prompt_texts(tokenizer, list(prompts)))]
    engine = LLM(model=model_path, tokenizer=model_path, seed=0 if seed is None else seed,
                 gpu_memory_utilization=gpu_memory_utilization)
    params = SamplingParams(n=num_samples, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                            seed=seed, skip_special_tokens=True)
    outputs = engine.generate([{"prompt_token_ids": prompt_ids} for prompt_ids in ids], params)
    return [[sample.text for sample in output.outputs] for output in outputs]


def score_completions(reward_funcs: Sequence[Callable], prompts: Sequence, completions: Sequence[Sequence[str]],
                      columns: dict[str, Sequence], weights: Sequence[float] | None = None,
                      tokenizer=None) -> list[list[float]]:
    """Weighted reward of every completion, ``[len(prompts)][K]``; NaN where no reward applies.

    Each reward sees flat lists, as in a GRPO step: every prompt and each dataset column repeated once per completion
    (`alignment.rewards.sources.call_reward`: conversational completions for conversational prompts, ``completion_ids``
    re-tokenized with ``tokenizer``).
    """
    weights = [1.0] * len(reward_funcs) if weights is None else list(weights)
    if len(weights) != len(reward_funcs):
        raise ValueError(f"`reward_weights` has {len(weights)} values for {len(reward_funcs)} reward functions.")
    counts = [len(group) for group in completions]
    flat_prompts = [prompt for prompt, k in zip(prompts, counts) for _ in range(k)]
    flat = [text for group in completions for text in group]
    flat_columns = {name: [value for value, k in zip(values, counts) for _ in range(k)]
                    for name, values in columns.items()}
    total = [0.0] * len(flat)
    scored = [False] * len(flat)
    for fn, weight in zip(reward_funcs, weights):
        for i, value in enumerate(call_reward(fn, flat_prompts, flat, flat_columns, tokenizer)):
            if value is not None:
                total[i] += weight * value
                scored[i] = True
    flat_scores = [score if ok else math.nan for score, ok in zip(total, scored)]
    out, start = [], 0
    for k in counts:
        out.append(flat_scores[start : start + k])
        start += k
    return out


def pair_indices(scores: Sequence[float], *, strategy: str = "best_vs_worst", threshold: float = 0.5,
                 min_margin: float = 0.0, max_pairs_per_prompt: int | None = None) -> list[tuple[int, int]]:
    """(chosen, rejected) completion indices of one prompt under ``strategy`` (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown pair strategy {strategy!r}; valid: {', '.join(STRATEGIES)}.")
    if min_margin < 0:
        raise ValueError(f"`min_margin` must be >= 0, got {min_margin}.")
    valid = [i for i, score in enumerate(scores) if not math.isnan(score)]
    if strategy == "best_vs_worst":
        if len(valid) < 2:
            return []
        best = max(valid, key=lambda i: (scores[i], -i))  # first of the best
        worst = min(valid, key=lambda i: (scores[i], i))  # first of the worst
        margin = scores[best] - scores[worst]
        return [(best, worst)] if margin > 0 and margin >= min_margin else []
    passing = [i for i in valid if scores[i] >= threshold]
    failing = [i for i in valid if scores[i] < threshold]
    pairs = [(p, f) for p in passing for f in failing if scores[p] - scores[f] >= min_margin]
    return pairs if max_pairs_per_prompt is None else pairs[:max_pairs_per_prompt]


def build_pairs(rows: Sequence[dict[str, Any]], completions: Sequence[Sequence[str]],
                scores: Sequence[Sequence[float]], **pairing: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Preference rows from sampled completions and their scores, and counts for the log.

    ``rows``: the prompt rows (``prompt`` plus any other columns, copied into each pair). Conversational prompts give
    conversational pairs (``chosen``/``rejected`` as one assistant message), standard prompts give strings.
    """
    pairs: list[dict[str, Any]] = []
    no_pair = 0
    for row, group, group_scores in zip(rows, completions, scores):
        indices = pair_indices(group_scores, **pairing)
        no_pair += not indices
        conversational = not isinstance(row["prompt"], str)
        for chosen, rejected in indices:
            def as_completion(text: str):
                return [{"role": "assistant", "content": text}] if conversational else text

            pairs.append({**row, "chosen": as_completion(group[chosen]), "rejected": as_completion(group[rejected]),
                          "score_chosen": group_scores[chosen], "score_rejected": group_scores[rejected],
                          "margin": group_scores[chosen] - group_scores[rejected]})
    return pairs, {"prompts": len(rows), "pairs": len(pairs), "prompts_without_pair": no_pair}


def _pair_token_ids(tokenizer, row: dict[str, Any]) -> list[tuple[list[int], int]]:
    """``[(ids, completion_start)]`` of ``row``'s chosen then rejected sequence, tokenized as TRL 1.16's DPOTrainer
    does (`DPOTrainer._prepare_dataset`): EOS appended to text completions, the chat template over prompt+completion
    for conversations, and the completion starting where prompt and prompt+completion tokens diverge."""
    from trl.data_utils import _tokenize, common_prefix_length, is_conversational

    sides = (row["chosen"], row["rejected"])
    if is_conversational(row):
        prompt_ids = _tokenize(tokenizer, row["prompt"], add_generation_prompt=True)["input_ids"]
        full = [_tokenize(tokenizer, row["prompt"] + side)["input_ids"] for side in sides]
    else:
        eos = tokenizer.eos_token
        prompt_ids = _tokenize(tokenizer, row["prompt"])["input_ids"]
        full = [_tokenize(tokenizer, row["prompt"] + (side if side.endswith(eos) else side + eos))["input_ids"]
                for side in sides]
    start = min(common_prefix_length(prompt_ids, ids) for ids in full)
    return [(list(ids), start) for ids in full]


@torch.no_grad()
def policy_sequence_logps(model, tokenizer, rows: Sequence[dict[str, Any]], *,
                          batch_size: int = 8) -> list[tuple[float, float]]:
    """``(log π(chosen | prompt), log π(rejected | prompt))`` of each preference row under ``model``: the sum of the
    completion tokens' log-probs, one teacher-forced forward per response.

    The tokens are those the preference trainer sees (`_pair_token_ids`), so with the same weights these equal the
    trainer's sequence sums (up to float rounding) as long as its ``max_length`` does not truncate the pair.
    """
    model.eval()
    sequences = [seq for row in rows for seq in _pair_token_ids(tokenizer, row)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sums: list[float] = []
    for begin in range(0, len(sequences), 2 * batch_size):
        chunk = sequences[begin : begin + 2 * batch_size]
        length = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        completion = torch.zeros_like(ids, dtype=torch.bool)
        for i, (tokens, start) in enumerate(chunk):  # right padding, as TRL's collator
            ids[i, : len(tokens)] = torch.tensor(tokens)
            attention[i, : len(tokens)] = 1
            completion[i, start : len(tokens)] = True
        ids, attention, completion = ids.to(model.device), attention.to(model.device), completion.to(model.device)
        logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        sums += (token_logps * completion[:, 1:]).sum(-1).tolist()
    return [(sums[i], sums[i + 1]) for i in range(0, len(sums), 2)]
