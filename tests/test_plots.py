"""Pictures of a run (`alignment.plots`): every run leaves `plots/*.png` drawn from its own log history, keeps that
history in `trainer_state.json` even with `save_strategy: no`, survives a plotting failure, and `alignment-plot`
redraws any past run."""

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignment import plots
from alignment.commands import cli

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as image:
        image.verify()  # a truncated or corrupt file raises here
    with Image.open(path) as image:
        assert image.width >= 300 and image.height >= 200, (path, image.size)


def ydata(figure, label: str) -> list[float]:
    """The y values of the line labelled ``label`` in a curve figure."""
    (line,) = [line for line in figure.axes[0].get_lines() if line.get_label() == label]
    return [float(y) for y in line.get_ydata()]


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir, tmp_path_factory):
    """A tiny DPO run with `save_strategy: no` (no checkpoint holds a trainer state) and evaluation before/after."""
    out = tmp_path_factory.mktemp("plots") / "dpo"
    trainer, results = cli.dpo_main(["--config", str(ROOT / "recipes/tiny/dpo.yaml"), "--model_name_or_path",
                                     tiny_model_dir, "--output_dir", str(out), "--save_strategy", "no",
                                     "--eval_before_training", "true"])
    return out, trainer, results


def test_training_series_and_evaluation_bars_from_logs():
    log_history = [
        {"loss": 0.7, "grad_norm": 1.5, "learning_rate": 1e-3, "domain_weight/math": 0.6, "domain_weight/code": 0.4,
         "reward_weight/accuracy_reward": 0.5, "rewards/accuracy_reward/mean": 0.25, "reward": 0.25, "kl": 0.0,
         "num_tokens": 100.0, "step": 1},
        {"loss": float("nan"), "grad_norm": 1.0, "learning_rate": "0.001", "domain_weight/math": 0.7,
         "domain_weight/code": 0.3, "reward_weight/accuracy_reward": 0.6, "kl": 0.1, "step": 2,
         "reward_weight/meta_reward": 1.0, "reward_weight/hv_contribution": 0.2,
         "reward_influence/accuracy_reward": 3.0},
        {"eval_loss": 0.65, "eval_rewards/margins": 0.2, "step": 2},
        {"train_loss": 0.69, "train_runtime": 1.0, "step": 2},
        {"loss": 0.5},  # no step: not placeable on the x axis
    ]
    series = plots.training_series(log_history)
    assert series["loss"] == {"loss": ([1], [0.7]), "eval_loss": ([2], [0.65])}  # nan dropped, summary not drawn
    assert series["grad_norm"] == {"grad_norm": ([1, 2], [1.5, 1.0])}
    assert series["learning_rate"] == {"learning_rate": ([1], [1e-3])}  # a string is not a number
    assert series["domain_weights"] == {"domain_weight/math": ([1, 2], [0.6, 0.7]),
                                        "domain_weight/code": ([1, 2], [0.4, 0.3])}
    assert series["reward_weights"] == {"reward_weight/accuracy_reward": ([1, 2], [0.5, 0.6])}
    assert series["reward_weighting"] == {"reward_weight/meta_reward": ([2], [1.0]),
                                          "reward_weight/hv_contribution": ([2], [0.2]),
                                          "reward_influence/accuracy_reward": ([2], [3.0])}
    assert series["rewards"] == {"rewards/accuracy_reward/mean": ([1], [0.25]), "reward": ([1], [0.25])}
    assert series["kl_entropy"] == {"kl": ([1, 2], [0.0, 0.1])}
    assert series["preference_rewards"] == {"eval_rewards/margins": ([2], [0.2])}
    assert "num_tokens" not in {m for panel in series.values() for m in panel}
    assert list(series) == [stem for stem, _, _ in plots.PANELS if stem in series]

    new = {"before": {"rewards": {"accuracy_reward": {"add": 0.0, "all": 0.0}, "rm": {"add": -1.5, "all": None}},
                      "accuracy": {"add": 0.0, "all": 0.0}},
           "after": {"rewards": {"accuracy_reward": {"add": 0.5, "all": 0.5}, "rm": {"add": 2.0, "all": 2.0}},
                     "accuracy": {"add": 0.5, "all": 0.5}},
           "preference": {"eval_loss": 0.6}, "world_size": 1}
    assert plots.evaluation_bars(new) == {
        "accuracy_reward": {"before": {"add": 0.0, "all": 0.0}, "after": {"add": 0.5, "all": 0.5}},
        "rm": {"before": {"add": -1.5}, "after": {"add": 2.0, "all": 2.0}},
    }
    old = {"after": {"accuracy": {"add": 0.25, "all": 0.25}, "count": {"add": 4, "all": 4}}}
    assert plots.evaluation_bars(old) == {"accuracy": {"after": {"add": 0.25, "all": 0.25}}}
    reward_model = {"reward": {"pairwise_accuracy": {"all": 0.75, "math": 1.0}, "mean_margin": {"all": 0.1}}}
    assert plots.evaluation_bars(reward_model) == {"pairwise_accuracy": {"after": {"all": 0.75, "math": 1.0}}}

    figure = plots.evaluation_figure(plots.evaluation_bars(new))
    first = figure.axes[0]  # accuracy_reward: domains in order (`all` last), one bar group per when
    assert [t.get_text() for t in first.get_xticklabels()] == ["add", "all"]
    assert [list(c.datavalues) for c in first.containers] == [[0.0, 0.0], [0.5, 0.5]]
    second = figure.axes[1]  # rm: the missing "before/all" is a gap, not a zero
    before, after = (list(c.datavalues) for c in second.containers)
    assert before[0] == -1.5 and math.isnan(before[1]) and after == [2.0, 2.0]


def test_every_run_leaves_plots_of_its_own_loss_history(dpo_run):
    out, trainer, results = dpo_run
    assert not list(out.glob("checkpoint-*"))  # save_strategy: no
    state = json.loads((out / "trainer_state.json").read_text())
    trained = [e for e in trainer.state.log_history if "eval_loss" not in e]  # the evaluation after is later
    assert state["log_history"] == trained and state["global_step"] == 8
    assert len([e for e in trained if "loss" in e]) == 8

    expected = {"loss", "preference_rewards", "preference_accuracy", "kl_entropy", "grad_norm", "learning_rate",
                "evaluation"}
    assert {p.stem for p in (out / "plots").glob("*.png")} == expected
    for path in (out / "plots").glob("*.png"):
        assert_valid_png(path)

    figures = plots.run_figures(out)
    for label, stem in (("loss", "loss"), ("rewards/margins", "preference_rewards"), ("grad_norm", "grad_norm"),
                        ("rewards/accuracies", "preference_accuracy"), ("learning_rate", "learning_rate")):
        assert ydata(figures[stem], label) == [e[label] for e in trained if label in e], label
    saved = json.loads((out / "eval_results.json").read_text())
    axes = figures["evaluation"].axes[0]
    domains = [t.get_text() for t in axes.get_xticklabels()]
    assert domains == ["addition", "comparison", "all"]
    for when, bars in zip(("before", "after"), axes.containers):
        assert list(bars.datavalues) == [saved[when]["rewards"]["accuracy_reward"][d] for d in domains]


def test_alignment_plot_redraws_a_past_run(dpo_run, tmp_path, monkeypatch, capsys):
    from alignment.commands import console

    out, _, _ = dpo_run
    past = tmp_path / "past"
    shutil.copytree(out, past, ignore=shutil.ignore_patterns("plots", "*.safetensors"))
    monkeypatch.setattr(sys, "argv", ["alignment-plot", str(past)])
    assert console.plot() is None  # pip's wrapper exits with its return value
    drawn = sorted(p.name for p in (past / "plots").glob("*.png"))
    assert drawn == sorted(p.name for p in (out / "plots").glob("*.png"))
    assert str(past / "plots" / "loss.png") in capsys.readouterr().out

    # A run saved before trainer_state.json was written at the end: the newest checkpoint's history is drawn.
    older = tmp_path / "older"
    (older / "checkpoint-4").mkdir(parents=True)
    (older / "checkpoint-8").mkdir()
    state = json.loads((out / "trainer_state.json").read_text())
    (older / "checkpoint-8" / "trainer_state.json").write_text(json.dumps(state))
    (older / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({**state, "log_history": []}))
    written = plots.plot_main([str(older), "--plots_dir", str(tmp_path / "elsewhere")])
    assert {p.name for p in written} == {"loss.png", "preference_rewards.png", "preference_accuracy.png",
                                         "kl_entropy.png", "grad_norm.png", "learning_rate.png"}
    assert all(p.parent == tmp_path / "elsewhere" for p in written)

    # Nothing to draw: a clear error naming the files, exit status 2, no traceback.
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        plots.plot_main([str(tmp_path / "empty")])
    assert exit_info.value.code == 2
    assert "trainer_state.json" in capsys.readouterr().err

    # Headless, as its own process: `python -m alignment.plots`.
    shutil.rmtree(past / "plots")
    env = dict(os.environ, MPLBACKEND="", DISPLAY="")
    proc = subprocess.run([sys.executable, "-m", "alignment.plots", str(past)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_valid_png(past / "plots" / "evaluation.png")

    # Fast: drawing a past run imports neither torch nor the trainers (TRL alone takes ~10 s to import).
    code = ("import sys; from alignment.plots import plot_main; plot_main(sys.argv[1:]); "
            "print(sorted({'torch', 'trl', 'transformers'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code, str(older)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_plotting_failure_does_not_fail_the_run(tiny_model_dir, tmp_path, monkeypatch, caplog):
    """Nor does `report_to: tensorboard` without TensorBoard (transformers' callback would raise at Trainer init)."""
    import transformers.integrations
    import transformers.integrations.integration_utils

    def broken(*args, **kwargs):
        raise RuntimeError("the plotting backend broke")

    monkeypatch.setattr(plots, "curve_figure", broken)
    for module in (transformers.integrations, transformers.integrations.integration_utils):
        monkeypatch.setattr(module, "is_tensorboard_available", lambda: False)
    out = tmp_path / "grpo"
    with caplog.at_level(logging.INFO, logger="alignment"):
        trainer, results = cli.grpo_main(["--config", str(ROOT / "recipes/tiny/grpo.yaml"), "--model_name_or_path",
                                          tiny_model_dir, "--output_dir", str(out), "--max_steps", "2",
                                          "--report_to", "tensorboard"])
    assert trainer.state.global_step == 2 and trainer.args.report_to == []
    assert any("TensorBoard is not installed" in r.getMessage() for r in caplog.records)
    assert (out / "eval_results.json").is_file() and (out / "README.md").is_file()  # results and card kept
    assert (out / "trainer_state.json").is_file()
    failures = [r for r in caplog.records if "Drawing the plots of" in r.getMessage()]
    assert failures and failures[0].exc_info and "the plotting backend broke" in str(failures[0].exc_info[1])
    assert not list((out / "plots").glob("*.png"))

    # Without matplotlib: a warning that says what to install, and no exception.
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    caplog.clear()
    assert plots.plot_run(out) == []
    assert any("pip install matplotlib" in r.getMessage() for r in caplog.records)


def test_report_to_tensorboard_only_when_it_is_installed(tmp_path, monkeypatch, caplog):
    import transformers.integrations
    from transformers import TrainingArguments

    def args():
        return TrainingArguments(output_dir=str(tmp_path), report_to="tensorboard", use_cpu=True)

    monkeypatch.setattr(transformers.integrations, "is_tensorboard_available", lambda: False)
    missing = args()
    with caplog.at_level(logging.INFO, logger="alignment"):
        plots.drop_missing_reporters(missing)
    assert missing.report_to == []
    assert any("TensorBoard is not installed" in r.getMessage() and "[tensorboard]" in r.getMessage()
               for r in caplog.records)

    monkeypatch.setattr(transformers.integrations, "is_tensorboard_available", lambda: True)
    present = args()
    plots.drop_missing_reporters(present)
    assert present.report_to == ["tensorboard"]

    # Every SmolLM2 training recipe asks for TensorBoard (kept only where it is installed).
    recipes = [yaml.safe_load(path.read_text()) | {"file": path.name}
               for path in sorted((ROOT / "recipes/smollm2-135m").glob("*.yaml"))]
    training = [recipe for recipe in recipes if "learning_rate" in recipe]  # not pair generation or the driver
    assert len(training) >= 30
    assert [r["file"] for r in training if r.get("report_to") != "tensorboard"] == []


def test_iterations_plot_follows_the_rounds(tmp_path):
    records = [
        {"round": 1, "pass_rate": 0.25, "mean_score": -3.0, "accuracy_before": {"add": 0.0, "all": 0.0},
         "accuracy_after": {"add": 0.5, "all": 0.5}},
        {"round": 2, "pass_rate": 0.5, "mean_score": None, "accuracy_before": None,
         "accuracy_after": {"add": 0.75, "all": None}},
    ]
    rows = plots.iteration_series(records)
    held_out, pass_rate, mean_score = rows.values()
    assert held_out == {"add": ([0, 1, 2], [0.0, 0.5, 0.75]), "all": ([0, 1], [0.0, 0.5])}
    assert pass_rate == {"pass_rate": ([1, 2], [0.25, 0.5])}
    assert mean_score == {"mean_score": ([1], [-3.0])}
    path = plots.plot_iterations(tmp_path, records)
    assert path == tmp_path / "plots" / "iterations.png"
    assert_valid_png(path)
    assert plots.plot_iterations(tmp_path / "none", []) is None and not (tmp_path / "none").exists()
