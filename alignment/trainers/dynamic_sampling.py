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

Several processes (DDP, ZeRO, FSDP). How TRL 1.16's `GRPOTrainer` splits a generation batch: its `RepeatSampler`
(seeded with `args.seed`, the same on every rank) yields `generation_batch_size / G` prompt indices, each repeated G
times consecutively; accelerate's sharded dataloader hands rank r the r-th contiguous chunk of
`local = per_device_train_batch_size * steps_per_generation` rows. Each rank generates its own chunk,
`_calculate_rewards` gathers the rewards of all ranks (rank order), advantages are computed on the gathered
`(world * local,)` rewards, and rank r keeps `process_slice = [r * local, (r + 1) * local)`. TRL only requires
`generation_batch_size` to be a multiple of G, not `local`, so **a group can span ranks** (G = 4, local = 6: the
second group is rows 4-5 of rank 0 and rows 0-1 of rank 1). Hence the filter works on the global batch, as verl's
single controller does (it filters the whole batch on the driver and then dispatches it to the workers):

- the keep mask is computed from the gathered correctness scores (`trainer._group_scores` is gathered), so every rank
  takes the same decision and runs the same number of rounds;
- refills: every rank draws the same `wanted = world * local / G` new prompts (the refill generator is seeded with
  `seed + 1` on every rank) and generates its own chunk `[r * local, (r + 1) * local)`, as TRL's sampler would split
  them;
- at the end every rank gathers the rounds that contributed rows (2-D tensors padded across processes first, prompt
  ones on the left), keeps the first `wanted` passing global groups in generation order and takes its own
  `[r * local, (r + 1) * local)` slice: every rank trains on `local` rows and `num_items_in_batch` stays the global
  token count, as TRL defines it.

Cost with world size > 1: nothing when the first round keeps every group (TRL's output is returned as is); otherwise,
per contributing round, one all-gather per 1-D tensor and two per 2-D tensor (sizes, then data) of the generation
output (ids, masks, advantages, and old / reference / sampling log-probs when TRL computed them), and every rank holds
all ranks' rows of those rounds until the batch is merged. A rank's slice is padded to the widest prompt /
completion of the kept global batch rather than of its own rows (masked positions; left padding only shifts RoPE
positions uniformly). With one process nothing is gathered and the path is the single-process one.
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


def check_group_filter(*, group_filter: str, max_generation_rounds: int) -> None:
    if group_filter not in GROUP_FILTERS:
        raise ValueError(f"Unknown `group_filter={group_filter!r}`; choose one of {sorted(GROUP_FILTERS)}.")
    if max_generation_rounds < 1:
        raise ValueError(f"`max_generation_rounds` must be >= 1, got {max_generation_rounds}.")


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
        _check_selectable(key, value)
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


def _check_selectable(key: str, value: Any) -> None:
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        raise ValueError(f"`group_filter` cannot select rows of the generation output {key!r} (multimodal or "
                         "custom inputs); set `group_filter: none`.")


def _gather_output(accelerator, output: dict, *, pad_token_id: int) -> dict[str, Any]:
    """Every process's rows of one generation output, in rank order (the order of TRL's `process_slice`); 2-D
    tensors are first padded to the widest process, prompt ones on the left as TRL pads them. Every rank must call
    this with the same keys in the same order (collectives)."""
    gathered: dict[str, Any] = {}
    for key, value in output.items():
        if key == "num_items_in_batch":  # already the global count; `_select_and_merge` recounts it anyway
            continue
        _check_selectable(key, value)  # same keys on every rank: all ranks raise together, none waits
        if value.dim() > 1:
            value = accelerator.pad_across_processes(value, dim=1, pad_index=pad_token_id if key.endswith("_ids")
                                                     else 0, pad_first=key.startswith("prompt_"))
        gathered[key] = accelerator.gather(value)
    return gathered


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
    ``world * len(inputs) / G`` groups of the global batch pass ``group_filter``; the first that many are kept, in
    generation order, and this process gets rows ``[rank * len(inputs), (rank + 1) * len(inputs))`` of them.

    ``score`` must leave the correctness scores of the whole (gathered, ``(world * len(inputs),)``) batch in
    ``trainer._group_scores``. Logs `group_filter/drop_rate` (dropped / generated groups over all rounds, global) and
    `group_filter/generation_rounds`, the same values on every rank.
    """
    accelerator = trainer.accelerator
    world, rank = accelerator.num_processes, accelerator.process_index
    group_size = trainer.num_generations
    local = len(inputs)
    wanted = world * local // group_size  # TRL: generation_batch_size = world * local is a multiple of G
    kept: list[tuple[dict, torch.Tensor]] = []
    n_kept = generated = dropped = 0
    batch = inputs
    for rounds in range(1, max_generation_rounds + 1):
        output = score(batch)
        # Gathered scores: the same mask, hence the same rounds and refills, on every rank.
        keep = keep_groups(trainer._group_scores, group_size=group_size, group_filter=group_filter).cpu()
        generated += keep.numel()
        dropped += int((~keep).sum())
        # Like verl, passing groups beyond the batch size in the last round are left unused (not counted dropped).
        groups = keep.nonzero().flatten()[: wanted - n_kept]
        n_kept += len(groups)
        rows = (groups.unsqueeze(1) * group_size + torch.arange(group_size)).flatten()  # global rows of this round
        kept.append((output, rows.to(output["advantages"].device)))
        if n_kept == wanted:
            break
        # Every rank draws the same prompts (same seed, same number of draws) and generates its own chunk.
        batch = _fresh_prompts(trainer, wanted, group_size)[rank * local:(rank + 1) * local]
    else:
        raise RuntimeError(f"`group_filter={group_filter!r}`: only {n_kept} of the {wanted} groups a batch needs "
                           f"passed the filter after `max_generation_rounds={max_generation_rounds}` generation "
                           f"rounds ({dropped} of {generated} groups dropped); the prompts are too easy or too hard "
                           "for the filter. Raise `max_generation_rounds`, change the data, or set "
                           "`group_filter: none`.")
    metrics = trainer._metrics["train"]
    metrics["group_filter/drop_rate"].append(dropped / generated)
    metrics["group_filter/generation_rounds"].append(float(rounds))
    pad_token_id = trainer._tokenizer.pad_token_id
    if world == 1:
        return _select_and_merge(kept, pad_token_id=pad_token_id)
    if rounds == 1:  # nothing dropped: every rank's own rows are its slice already
        return kept[0][0]
    # Rounds that gave no group are skipped on every rank alike (the decisions are global).
    kept = [(_gather_output(accelerator, output, pad_token_id=pad_token_id), rows) for output, rows in kept
            if len(rows)]
    merged = _select_and_merge(kept, pad_token_id=pad_token_id)  # global batch; num_items_in_batch global
    return {key: value if key == "num_items_in_batch" else value[rank * local:(rank + 1) * local]
            for key, value in merged.items()}
