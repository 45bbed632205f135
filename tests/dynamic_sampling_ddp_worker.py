"""One rank of `test_dynamic_sampling.py::test_two_processes_keep_the_first_passing_groups_of_the_global_batch`.

Runs the `grpo` step (what `scripts/run_grpo.py` runs) with its command-line arguments, after wrapping
`GroupRLTrainer` so that every training generation round (the rows this rank generated, before filtering) and every
merged generation batch (the rows this rank trains on) are recorded; writes them to
``$DYNSAMPLE_RECORD_DIR/rank<RANK>.json`` at exit. Also the file of the reward the test names (`domain_reward`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def domain_reward(completions, domain, **kwargs):
    """1 for every completion of a `comparison` prompt (an all-correct group), else 0 / 1 alternating by position in
    this rank's batch: every group spans an even number of consecutive rows on each rank, so it is mixed."""
    return [1.0 if d == "comparison" else float(i % 2) for i, d in enumerate(domain)]


def _rows(ids, mask) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


def _record(output) -> dict:
    return {"prompt": _rows(output["prompt_ids"], output["prompt_mask"]),
            "completion": _rows(output["completion_ids"], output["completion_mask"]),
            "advantages": output["advantages"].tolist()}


def main() -> int | None:
    from alignment.commands.console import run_step
    from alignment.trainers.group_rl import GroupRLTrainer

    record: dict[str, list] = {"rounds": [], "batches": []}
    score, generate = GroupRLTrainer._score_generation_batch, GroupRLTrainer._generate_and_score_completions

    def recording_score(self, inputs):
        output = score(self, inputs)
        if self.model.training:
            record["rounds"].append({"domain": [x["domain"] for x in inputs], **_record(output)})
        return output

    def recording_generate(self, inputs):
        output = generate(self, inputs)
        if self.model.training:
            metrics = self._metrics["train"]
            completion_mask = output["completion_mask"]
            record["batches"].append({**_record(output), "num_items_in_batch": int(output["num_items_in_batch"]),
                                      # TRL's layout: prompts left-padded, completions right-padded
                                      "prompts_left_padded": bool(output["prompt_mask"][:, -1].all()),
                                      "completions_right_padded": bool((completion_mask[:, 1:]
                                                                        <= completion_mask[:, :-1]).all()),
                                      "drop_rate": metrics["group_filter/drop_rate"][-1],
                                      "generation_rounds": metrics["group_filter/generation_rounds"][-1]})
        return output

    GroupRLTrainer._score_generation_batch = recording_score
    GroupRLTrainer._generate_and_score_completions = recording_generate
    try:
        return run_step("grpo", sys.argv[1:])
    finally:
        path = Path(os.environ["DYNSAMPLE_RECORD_DIR"]) / f"rank{os.environ.get('RANK', '0')}.json"
        path.write_text(json.dumps(record))


if __name__ == "__main__":
    sys.exit(main())
