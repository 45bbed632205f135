"""Step benchmarks: the scripts run end to end on the tiny model (1-2 steps) and write the JSON they document; the
shared timer attributes time to the right step and only on the wrapped instance. No speed is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_grpo_step_runs_and_writes_the_documented_json(tmp_path):
    out = tmp_path / "grpo.json"
    variants = ["grpo", "clip_by_advantage_sign", "hapo"]
    proc = run_script("grpo_step.py", "--model", "tiny", "--steps", "2", "--warmup", "1", "--trl-every", "2",
                      "--variants", ",".join(variants), "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"date", "load_average", "device", "generation_method", "reward", "steps", "warmup", "variants",
            "loss_type"} <= set(result["meta"])
    assert set(result["spread"]) == {"trl_runs", "trl_median_min_s", "trl_median_max_s", "trl_spread_pct"}
    runs = result["runs"]
    # --trl-every 2: TRL, grpo, clip, TRL, hapo, TRL.
    assert [r["variant"] for r in runs] == ["trl_default", "grpo", "clip_by_advantage_sign", "trl_default", "hapo",
                                            "trl_default"]
    assert [r["order"] for r in runs] == list(range(6))
    common = {"trainer", "variant", "order", "median_s", "min_s", "max_s", "steps_s", "generation_median_s",
              "generation_s", "generation_share", "rest_median_s", "completion_tokens_mean", "growth_mib"}
    ours = {"trl_median_s", "ratio", "trl_rest_median_s", "rest_ratio"}
    trl = [r for r in runs if r["trainer"] == "TRL GRPOTrainer"]
    for row in runs:
        assert common <= set(row)
        assert len(row["steps_s"]) == len(row["generation_s"]) == 2  # warm-up step discarded
        assert 0.0 < row["generation_share"] < 1.0  # generation is inside the step window, and not all of it
        assert row["min_s"] <= row["median_s"] <= row["max_s"]
        if row["trainer"] == "TRL GRPOTrainer":
            assert not ours & set(row)
            continue
        assert ours <= set(row)
        before = [r for r in trl if r["order"] < row["order"]][-1]
        after = [r for r in trl if r["order"] > row["order"]][0]
        assert row["trl_median_s"] == pytest.approx((before["median_s"] + after["median_s"]) / 2)
        assert row["ratio"] == pytest.approx(row["median_s"] / row["trl_median_s"])
    # Same seed, same checkpoint: every run generated the same number of completion tokens.
    assert len({r["completion_tokens_mean"] for r in runs}) == 1


def test_grpo_step_rejects_unknown_variant_before_running():
    proc = run_script("grpo_step.py", "--variants", "grpo,ppo")
    assert proc.returncode == 2
    assert "ppo" in proc.stderr and "valid names" in proc.stderr and "dr_grpo" in proc.stderr


def test_preference_step_still_runs_on_the_shared_timer(tmp_path):
    out = tmp_path / "pref.json"
    proc = run_script("preference_step.py", "--model", "tiny", "--steps", "1", "--warmup", "1", "--losses", "sigmoid",
                      "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["trainer"] for r in result["runs"]] == ["TRL DPOTrainer", "PreferenceTrainer", "TRL DPOTrainer"]
    ours = result["runs"][1]
    assert {"median_s", "steps_s", "trl_median_s", "ratio", "goal", "meets_goal", "growth_mib"} <= set(ours)
    assert ours["goal"] == 1.02
    assert set(result["spread"]) == {"trl_runs", "trl_median_min_s", "trl_median_max_s", "trl_spread_pct"}


def test_kto_step_alternates_trl_and_ours_on_the_same_loss(tmp_path):
    out = tmp_path / "kto.json"
    proc = run_script("kto_step.py", "--model", "tiny", "--steps", "1", "--warmup", "1", "--batch-size", "4",
                      "--repeats", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [(r["trainer"], r["loss"]) for r in result["runs"]] == [
        ("TRL KTOTrainer", "kto"), ("KTOAlignmentTrainer", "kto"), ("TRL KTOTrainer", "kto")]
    ours = result["runs"][1]
    trl_mean = (result["runs"][0]["median_s"] + result["runs"][2]["median_s"]) / 2
    assert ours["trl_median_s"] == pytest.approx(trl_mean) and ours["ratio"] == pytest.approx(ours["median_s"] / trl_mean)


# ---------------------------------------------------------------------------------------------- shared helpers
def test_step_timer_attributes_wrapped_method_time_to_its_step_on_one_instance(monkeypatch):
    from benchmarks import timing

    monkeypatch.setattr(timing, "CUDA", False)
    clock = {"t": 0.0}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock["t"])

    class Rollout:
        def generate(self, seconds):
            clock["t"] += seconds
            return "done"

    timed, plain = Rollout(), Rollout()
    timer = timing.StepTimer(warmup=1)
    timer.time_method(timed, "generate")
    assert "generate" not in vars(plain) and Rollout.generate is not timed.generate  # instance-level only
    for step, (inside, outside) in enumerate([(2.0, 1.0), (0.5, 3.0), (0.0, 0.25)]):
        state = types.SimpleNamespace(global_step=step)
        timer.on_step_begin(None, state, None)
        assert timed.generate(inside) == "done"
        plain.generate(outside)  # not wrapped: counts in the step, not in the section
        timer.on_step_end(None, state, None)
    assert timer.durations == [3.0, 3.5, 0.25]
    assert timer.sections["generate"] == [2.0, 0.5, 0.0]
    timing.close_sampler()


def test_neighbour_mean_and_spread_hand_values():
    from benchmarks.timing import neighbour_mean, spread

    runs = [{"order": 0, "ref": True, "m": 1.0}, {"order": 1, "ref": False, "m": 5.0},
            {"order": 2, "ref": True, "m": 3.0}, {"order": 3, "ref": False, "m": 7.0}]

    def is_ref(r):
        return r["ref"]

    assert neighbour_mean(runs, runs[1], is_ref, key="m") == 2.0  # (1 + 3) / 2
    assert neighbour_mean(runs, runs[3], is_ref, key="m") == 3.0  # no later reference: the one before
    stats = spread([1.0, 3.0, 2.0])
    assert stats == {"runs": 3, "min": 1.0, "max": 3.0, "pct": 100.0}  # (3 - 1) / median 2
