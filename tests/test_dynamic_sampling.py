"""Dynamic sampling (`group_filter`): DAPO's zero-variance filter, NGRPO's all-correct filter, refill, cap, logging.

Rewards are fixed per prompt by a `kind` column (all correct / all wrong / mixed within the group), so which groups
must be kept and the drop rate are counted by hand from the calls the reward saw.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.configs import GroupRLConfig
from alignment.testing import trainer_test_args
from alignment.trainers.dynamic_sampling import _select_and_merge, check_group_filter, keep_groups
from alignment.trainers.group_rl import GroupRLTrainer

G = 4
CALLS: list[list[str]] = []  # per reward call: the `kind` of each completion's prompt, in order


def kind_reward(completions, kind, **kwargs):
    """1 for every completion of an `all` prompt, 0 for `none`, alternating 0/1 inside a `mixed` group."""
    CALLS.append(list(kind))
    return [{"all": 1.0, "none": 0.0, "mixed": float(i % 2)}[k] for i, k in enumerate(kind)]


def dataset(kinds: list[str]) -> Dataset:
    return Dataset.from_dict({"prompt": [[{"role": "user", "content": f"Question {i}: say {k}."}]
                                         for i, k in enumerate(kinds)], "kind": kinds})


def make_trainer(model_dir, tmp_path, train, **overrides):
    args = dict(num_generations=G, max_completion_length=4, per_device_train_batch_size=2 * G, max_steps=1)
    args.update(overrides)
    CALLS.clear()
    return GroupRLTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=[kind_reward],
                          args=GroupRLConfig(**trainer_test_args(tmp_path, **args)), train_dataset=train,
                          processing_class=AutoTokenizer.from_pretrained(model_dir))


def _rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


def _run_generation(trainer, inputs):
    """The trainer's train-mode generation, recording every round's own output (TRL's, before merging)."""
    rounds = []
    score = trainer._score_generation_batch

    def recording(batch):
        rounds.append((batch, score(batch)))
        return rounds[-1][1]

    trainer._score_generation_batch = recording
    trainer.model.train()
    return trainer._generate_and_score_completions(inputs), rounds


def _expected_rows(rounds, keep, wanted):
    """Prompt / completion token rows of the first `wanted` groups whose kind is in `keep`, in generation order."""
    prompts, completions = [], []
    for batch, output in rounds:
        p, c = _rows(output["prompt_ids"], output["prompt_mask"]), _rows(output["completion_ids"],
                                                                        output["completion_mask"])
        for start in range(0, len(batch), G):
            if batch[start]["kind"] in keep and len(prompts) < wanted * G:
                prompts += p[start:start + G]
                completions += c[start:start + G]
    return prompts, completions


@pytest.mark.parametrize("group_filter, first, keep, dropped_first", [
    ("zero_variance", ["all", "mixed", "none", "mixed"], {"mixed"}, 2),
    ("all_correct", ["all", "none", "mixed", "none"], {"mixed", "none"}, 1),
])
def test_kept_groups_are_exactly_the_passing_ones_and_the_batch_is_full(tiny_model_dir, tmp_path, group_filter,
                                                                        first, keep, dropped_first):
    # Refills draw from the train set, all mixed: round 2 fills the batch, its unused groups are not "dropped".
    train = dataset(["mixed"] * 6)
    trainer = make_trainer(tiny_model_dir, tmp_path, train, group_filter=group_filter,
                           per_device_train_batch_size=4 * G)
    inputs = [row for row in dataset(first) for _ in range(G)]
    output, rounds = _run_generation(trainer, inputs)
    assert len(rounds) == 2
    assert [row["kind"] for row in rounds[1][0]] == ["mixed"] * 4 * G
    prompts, completions = _expected_rows(rounds, keep, wanted=4)
    assert output["advantages"].shape == (4 * G,)  # the batch is full
    assert _rows(output["prompt_ids"], output["prompt_mask"]) == prompts
    assert _rows(output["completion_ids"], output["completion_mask"]) == completions
    assert output["num_items_in_batch"].item() == sum(len(c) for c in completions)
    # Left-padded prompts as TRL builds them: every row's last prompt position is a real token.
    assert output["prompt_mask"][:, -1].all()
    metrics = trainer._metrics["train"]
    assert metrics["group_filter/drop_rate"] == [dropped_first / 8]  # 4 + 4 groups generated
    assert metrics["group_filter/generation_rounds"] == [2.0]


def test_training_logs_the_hand_counted_drop_rate(tiny_model_dir, tmp_path):
    train = dataset(["all", "none", "mixed", "all", "mixed", "none", "mixed", "all"])
    # Two accumulation steps: TRL splits the refilled generation batch into two micro-batches.
    trainer = make_trainer(tiny_model_dir, tmp_path, train, group_filter="zero_variance",
                           per_device_train_batch_size=G, gradient_accumulation_steps=2)
    trainer.train()
    groups = [call[i] for call in CALLS for i in range(0, len(call), G)]
    assert len(CALLS) > 1 and "mixed" in groups and set(groups) - {"mixed"}  # some groups were dropped and refilled
    log = trainer.state.log_history[0]
    assert log["group_filter/drop_rate"] == pytest.approx(sum(g != "mixed" for g in groups) / len(groups))
    assert log["group_filter/generation_rounds"] == len(CALLS)
    # Only mixed groups were trained on: GRPO gives them advantages of +-1 (unbiased std), never 0.
    assert log["advantages/min"] < 0 < log["advantages/max"]


def test_the_round_cap_stops_with_a_clear_error(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path, dataset(["all", "none"] * 4), group_filter="zero_variance",
                           max_generation_rounds=3)
    message = r"only 0 of the 2 groups .*`max_generation_rounds=3`.*\(6 of 6 groups dropped\)"
    with pytest.raises(RuntimeError, match=message):
        trainer.train()
    assert len(CALLS) == 3


def test_no_filter_and_eval_are_untouched(tiny_model_dir, tmp_path):
    inputs = [row for row in dataset(["all", "none"]) for _ in range(G)]
    trainer = make_trainer(tiny_model_dir, tmp_path, dataset(["all", "none"]))
    output, rounds = _run_generation(trainer, inputs)
    assert len(rounds) == 1 and output is rounds[0][1]
    assert "group_filter/drop_rate" not in trainer._metrics["train"]
    # Evaluation with a filter on: scored once, nothing dropped although both groups have zero variance.
    trainer = make_trainer(tiny_model_dir, tmp_path, dataset(["all", "none"]), group_filter="zero_variance")
    trainer.model.eval()
    output = trainer._generate_and_score_completions(inputs)
    assert output["advantages"].shape == (2 * G,) and len(CALLS) == 1
    assert "group_filter/drop_rate" not in trainer._metrics["eval"]


def test_merge_pads_prompts_left_completions_right_and_recounts_tokens():
    # Round 1: prompts of width 2, completions of width 3; round 2: prompts of width 3, completions of width 1.
    one = {"prompt_ids": torch.tensor([[0, 5], [6, 7]]), "prompt_mask": torch.tensor([[0, 1], [1, 1]]),
           "completion_ids": torch.tensor([[1, 2, 3], [4, 5, 0]]),
           "completion_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
           "advantages": torch.tensor([0.5, -0.5]), "num_items_in_batch": torch.tensor(5)}
    two = {"prompt_ids": torch.tensor([[8, 9, 10]]), "prompt_mask": torch.tensor([[1, 1, 1]]),
           "completion_ids": torch.tensor([[11]]), "completion_mask": torch.tensor([[1]]),
           "advantages": torch.tensor([2.0]), "num_items_in_batch": torch.tensor(1)}
    merged = _select_and_merge([(one, torch.tensor([0])), (two, torch.tensor([0]))], pad_token_id=0)
    assert merged["prompt_ids"].tolist() == [[0, 0, 5], [8, 9, 10]]
    assert merged["prompt_mask"].tolist() == [[0, 0, 1], [1, 1, 1]]
    assert merged["completion_ids"].tolist() == [[1, 2, 3], [11, 0, 0]]
    assert merged["completion_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert merged["advantages"].tolist() == [0.5, 2.0]
    assert merged["num_items_in_batch"].item() == 4  # 3 + 1 kept tokens, not round 1's 5 nor the sum 6
    with pytest.raises(ValueError, match="'pixel_values'"):
        _select_and_merge([({**one, "pixel_values": [1, 2]}, torch.tensor([0]))], pad_token_id=0)


def test_keep_groups_hand_values():
    scores = torch.tensor([1., 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0.5, 0.5, 0.5, 0.5])
    assert keep_groups(scores, group_size=4, group_filter="zero_variance").tolist() == [False, False, True, False]
    assert keep_groups(scores, group_size=4, group_filter="all_correct").tolist() == [False, True, True, False]
    assert keep_groups(scores, group_size=4, group_filter="none").tolist() == [True] * 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(group_filter="dynamic", max_generation_rounds=10), "zero_variance"),
    (dict(group_filter="zero_variance", max_generation_rounds=0), "max_generation_rounds"),
])
def test_bad_settings_fail_at_start_up(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_group_filter(**kwargs)
    check_group_filter(**{**kwargs, "group_filter": "none", "max_generation_rounds": 1})  # `none` always passes


def test_trainer_refuses_a_bad_filter_before_loading(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="Unknown `group_filter='dapo'`"):
        make_trainer(tiny_model_dir, tmp_path, dataset(["all"]), group_filter="dapo")
    streamed = dataset(["all", "mixed"]).to_iterable_dataset()
    with pytest.raises(ValueError, match="map-style dataset .*IterableDataset"):
        make_trainer(tiny_model_dir, tmp_path, streamed, group_filter="zero_variance")


def _global_rounds(records: list[dict], start: int, n: int) -> list[list[tuple]]:
    """Rounds ``start .. start + n`` of the global batch: each rank's rows, rank after rank (TRL's process order), as
    (domain, prompt tokens, completion tokens, advantage) rows."""
    return [[row for record in records for row in zip(*(record["rounds"][k][key] for key in
                                                         ("domain", "prompt", "completion", "advantages")))]
            for k in range(start, start + n)]


def test_two_processes_keep_the_first_passing_groups_of_the_global_batch(tiny_model_dir, tmp_path):
    """`accelerate launch` on 2 processes, DAPO's filter, every `comparison` prompt all correct (dropped): both ranks
    take the same decision, log the same drop rate and rounds, train on equally many rows, and those rows are their
    slices of the first passing groups of the global batch. Local batch 6, G = 4: the middle group spans the ranks."""
    import json
    from pathlib import Path

    from tests.launching import launch_cpu_2proc

    root = Path(__file__).resolve().parents[1]
    worker = root / "tests/dynamic_sampling_ddp_worker.py"
    local, world = 6, 2
    proc = launch_cpu_2proc(worker, [
        "--config", str(root / "recipes/tiny/grpo.yaml"), "--model_name_or_path", str(tiny_model_dir),
        "--output_dir", str(tmp_path / "ddp"), "--max_steps", "2", "--per_device_train_batch_size", str(local),
        "--group_filter", "zero_variance", "--reward_funcs", f"{worker}:domain_reward"],
        extra_env={"DYNSAMPLE_RECORD_DIR": str(tmp_path)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    records = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(world)]
    assert [len(r["batches"]) for r in records] == [2, 2] and len(records[0]["rounds"]) == len(records[1]["rounds"])
    wanted = world * local // G
    start = 0
    for step, batches in enumerate(zip(*(r["batches"] for r in records))):
        assert len({(b["drop_rate"], b["generation_rounds"]) for b in batches}) == 1  # one decision, both ranks
        assert [len(b["advantages"]) for b in batches] == [local, local]
        n = int(batches[0]["generation_rounds"])
        groups = [rows[i:i + G] for rows in _global_rounds(records, start, n) for i in range(0, len(rows), G)]
        assert all(len({(d, tuple(p)) for d, p, _, _ in group}) == 1 for group in groups)  # a group is one prompt
        passing = [group for group in groups if group[0][0] == "addition"]
        before_last = sum(group[0][0] == "addition" for group in groups[:-wanted])
        assert before_last < wanted <= len(passing)  # the last round was needed and filled the batch
        dropped = len(groups) - len(passing)
        assert batches[0]["drop_rate"] == pytest.approx(dropped / len(groups))
        kept = [row for group in passing[:wanted] for row in group]
        for rank, batch in enumerate(batches):
            mine = kept[rank * local:(rank + 1) * local]
            assert batch["prompt"] == [p for _, p, _, _ in mine], (step, rank)
            assert batch["completion"] == [c for _, _, c, _ in mine], (step, rank)
            assert batch["advantages"] == pytest.approx([a for *_, a in mine]), (step, rank)
            assert batch["num_items_in_batch"] == sum(len(c) for _, _, c, _ in kept)  # global, as TRL counts
            assert batch["prompts_left_padded"] and batch["completions_right_padded"]
        start += n
    assert start == len(records[0]["rounds"])
    # Some comparison prompt was drawn, so the refill / gather path ran (not only the all-pass shortcut).
    assert any(b["generation_rounds"] > 1 for b in records[0]["batches"])
