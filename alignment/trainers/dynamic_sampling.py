"""Dynamic sampling for group RL: drop groups that carry no learning signal, over-sample, refill the batch.

DAPO (Yu et al., arXiv 2503.14476, eq. 11 constraint 0 < |{o_i correct}| < G) keeps only groups whose correctness
varies and keeps generating until the batch is full; NGRPO's official script (verl `filter_groups.strategy =
all_correct`) drops only all-correct groups, because its virtual max-reward sample gives all-wrong groups a negative
advantage. verl's loop (`recipe/dapo/dapo_ray_trainer.py`): generate a batch, filter groups on a metric (`acc`),
append the kept ones, generate the next batch of *new* prompts until `train_batch_size` groups are collected, keep
the first `train_batch_size`, and stop with an error after `max_num_gen_batches` batches.

Paper vs code: the paper states the constraint on correct counts; verl filters on `std(metric) > 0` over the group,
which is the same for a 0/1 accuracy. Here the metric is `accuracy_reward` when it is a reward, else the summed
reward (as `frac_all_wrong_groups`); a completion is "correct" when that score is > 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def _keep_varied(correct: torch.Tensor) -> torch.Tensor:
    return correct.amax(dim=1) != correct.amin(dim=1)


def _keep_not_all_correct(correct: torch.Tensor) -> torch.Tensor:
    return ~(correct > 0).all(dim=1)


# Group filter name -> keep mask over groups from the (groups, G) correctness scores.
GROUP_FILTERS: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "none": None,
    "zero_variance": _keep_varied,  # DAPO: drop all-correct and all-wrong (any group whose score does not vary)
    "all_correct": _keep_not_all_correct,  # NGRPO: all-wrong groups still carry signal under its advantage
}


def check_group_filter(*, group_filter: str, max_generation_rounds: int, world_size: int) -> None:
    if group_filter not in GROUP_FILTERS:
        raise ValueError(f"Unknown `group_filter={group_filter!r}`; choose one of {sorted(GROUP_FILTERS)}.")
    if max_generation_rounds < 1:
        raise ValueError(f"`max_generation_rounds` must be >= 1, got {max_generation_rounds}.")
    if group_filter != "none" and world_size > 1:
        # Every rank would need the same number of kept groups and the same number of rounds (each round gathers
        # rewards across ranks); not implemented, so refuse rather than risk a rank waiting forever.
        raise ValueError(f"`group_filter={group_filter!r}` supports a single process only (world size is "
                         f"{world_size}); set `group_filter: none` or train on one process.")


def check_refill_dataset(dataset, *, group_filter: str) -> None:
    """Refills draw prompts by index, so the train set must be a map-style dataset with a length."""
    if group_filter != "none" and (dataset is None or not hasattr(dataset, "__len__") or not len(dataset)):
        raise ValueError(f"`group_filter={group_filter!r}` refills batches with new prompts drawn from the train "
                         f"dataset, which must be a non-empty map-style dataset (got {type(dataset).__name__}); "
                         "load it without streaming or set `group_filter: none`.")


def keep_groups(scores: torch.Tensor, *, group_size: int, group_filter: str) -> torch.Tensor:
    """Boolean keep mask over the groups of ``scores`` (one per completion, groups of ``group_size`` consecutive)."""
    rule = GROUP_FILTERS[group_filter]
    groups = scores.view(-1, group_size)
    if rule is None:
        return torch.ones(groups.shape[0], dtype=torch.bool, device=scores.device)
    return rule(groups)


def _select_and_merge(outputs: list[tuple[dict, torch.Tensor]], *, pad_token_id: int) -> dict[str, Any]:
    """Rows ``rows`` of each generation output, concatenated; prompt tensors are left-padded (as TRL pads prompts),
    completion-aligned ones right-padded. ``num_items_in_batch`` is recounted over the kept tokens."""
    first = outputs[0][0]
    merged: dict[str, Any] = {}
    for key, value in first.items():
        if key == "num_items_in_batch":
            continue
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            raise ValueError(f"`group_filter` cannot select rows of the generation output {key!r} (multimodal or "
                             "custom inputs); set `group_filter: none`.")
        parts = [output[key][rows] for output, rows in outputs]
        if value.dim() > 1:
            width = max(part.shape[1] for part in parts)
            pad = pad_token_id if key.endswith("_ids") else 0
            left = key.startswith("prompt_")
            parts = [torch.nn.functional.pad(part, (width - part.shape[1], 0) if left else (0, width - part.shape[1]),
                                             value=pad) if part.dim() == 2 else part for part in parts]
        merged[key] = torch.cat(parts)
    mask = merged["completion_mask"] if "tool_mask" not in merged else merged["completion_mask"] * merged["tool_mask"]
    merged["num_items_in_batch"] = mask.sum()
    return merged


def _fresh_prompts(trainer, n_groups: int, group_size: int) -> list[dict]:
    """The next ``n_groups`` prompts of a seeded shuffle of the train set (reshuffled when exhausted), each repeated
    ``group_size`` times consecutively as TRL's RepeatSampler does. Like verl, refills use new prompts."""
    state = trainer.__dict__.setdefault("_refill_state", {"order": [], "generator": None})
    if state["generator"] is None:
        state["generator"] = torch.Generator().manual_seed(trainer.args.seed + 1)
    dataset = trainer.train_dataset
    rows = []
    while len(rows) < n_groups:
        if not state["order"]:
            state["order"] = torch.randperm(len(dataset), generator=state["generator"]).tolist()
        rows.append(state["order"].pop())
    return [dataset[index] for index in rows for _ in range(group_size)]


def filtered_generation(trainer, inputs: list[dict], score: Callable[[list[dict]], dict], *,
                        group_filter: str, max_generation_rounds: int) -> dict[str, Any]:
    """``score(inputs)`` (generation, rewards, advantages of one generation batch), repeated on fresh prompts until
    ``len(inputs) / G`` groups pass ``group_filter``; the first that many are returned, in generation order.

    ``score`` must leave the correctness scores of its batch in ``trainer._group_scores``. Logs
    `group_filter/drop_rate` (dropped / generated groups over all rounds) and `group_filter/generation_rounds`.
    """
    group_size = trainer.num_generations
    wanted = len(inputs) // group_size
    kept: list[tuple[dict, torch.Tensor]] = []
    n_kept = generated = dropped = 0
    batch = inputs
    for rounds in range(1, max_generation_rounds + 1):
        output = score(batch)
        keep = keep_groups(trainer._group_scores, group_size=group_size, group_filter=group_filter).cpu()
        generated += keep.numel()
        dropped += int((~keep).sum())
        # Like verl, passing groups beyond the batch size in the last round are left unused (not counted dropped).
        groups = keep.nonzero().flatten()[: wanted - n_kept]
        n_kept += len(groups)
        rows = (groups.unsqueeze(1) * group_size + torch.arange(group_size)).flatten()
        kept.append((output, rows.to(output["advantages"].device)))
        if n_kept == wanted:
            break
        batch = _fresh_prompts(trainer, wanted, group_size)
    else:
        raise RuntimeError(f"`group_filter={group_filter!r}`: only {n_kept} of the {wanted} groups a batch needs "
                           f"passed the filter after `max_generation_rounds={max_generation_rounds}` generation "
                           f"rounds ({dropped} of {generated} groups dropped); the prompts are too easy or too hard "
                           "for the filter. Raise `max_generation_rounds`, change the data, or set "
                           "`group_filter: none`.")
    metrics = trainer._metrics["train"]
    metrics["group_filter/drop_rate"].append(dropped / generated)
    metrics["group_filter/generation_rounds"].append(float(rounds))
    return _select_and_merge(kept, pad_token_id=trainer._tokenizer.pad_token_id)
