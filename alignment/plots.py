"""Pictures of a run: `output_dir/plots/*.png` from `trainer_state.json` and `eval_results.json`.

After every run (`finalize_run`, through `plot_run`) and for any past run (`alignment-plot <output_dir>`, or
``python -m alignment.plots <output_dir>``):

- training curves over optimizer steps, one PNG per panel of `PANELS` that has data: the loss; the implicit rewards
  r = beta * log(pi/pi_ref) of chosen/rejected, their margin and the preference accuracy (margin > 0); the rewards of
  group RL (mean and std over the batch, each reward's mean); a reward model's batch accuracy and margin; KL and
  entropy; the gradient norm; the learning rate; online domain weights (`domain_weight/<domain>`) and per-domain
  losses; reward weights (`reward_weight/<reward>`) and the signals that move them. Metrics of evaluations during
  training (`eval_<name>`) are drawn in their training metric's panel, dashed with markers;
- `evaluation.png`: the held-out evaluation per domain, before and after training, one bar group per domain and one
  row per reward (`results[when]["rewards"][reward][domain]`, or the older `results[when]["accuracy"]`), and a reward
  model's held-out pairwise accuracy (`results["reward"]["pairwise_accuracy"]`);
- `iterations.png` of an iterative run (`alignment-iterate`): held-out score per domain round after round, and the
  pass rate / mean score of the answers each round sampled (`plot_iterations`).

Figures are built on `matplotlib.figure.Figure` (no pyplot, no display, no global state; PNGs go through Agg). The
data behind each picture comes from pure functions (`training_series`, `evaluation_bars`) so tests compare what is
drawn with the log history.

TensorBoard: recipes say `report_to: tensorboard`; `drop_missing_reporters` removes it, with one log line, when
neither `tensorboard` nor `tensorboardX` is installed (transformers' `TensorBoardCallback` would raise at Trainer
init). Event files go to ``$TENSORBOARD_LOGGING_DIR`` or ``<output_dir>/runs/<date>_<host>`` (transformers 5.23 has no
`logging_dir` argument any more).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger("alignment")

PLOTS_SUBDIR = "plots"
TRAINER_STATE_NAME = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME, without importing the Trainer
EVAL_RESULTS_NAME = "eval_results.json"
EVAL_PREFIX = "eval_"
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")  # transformers' PREFIX_CHECKPOINT_DIR-<global step>

# (file stem, title, metric names as a full regex). A metric (without its `eval_` prefix) is drawn in the first panel
# whose pattern matches it; metrics matching none (throughput, token counts, clip ratios, ...) are not drawn.
PANELS: tuple[tuple[str, str, str], ...] = (
    ("loss", "Loss", r"loss"),
    ("preference_rewards", "Implicit rewards  β·log(π/π_ref)", r"rewards/(chosen|rejected|margins)"),
    ("preference_accuracy", "Preference accuracy (margin > 0)", r"rewards/accuracies"),
    ("rewards", "Rewards (batch mean, std, each reward's mean)",
     r"reward|reward_std|rewards/[^/]+/(mean|std)|(min|mean|max)_reward|remax/baseline_reward"),
    ("reward_model", "Reward model: accuracy and margin on training batches", r"accuracy|margin"),
    ("kl_entropy", "KL and entropy", r"kl|entropy|.+[_/]kl"),
    ("grad_norm", "Gradient norm (before clipping)", r"grad_norm"),
    ("learning_rate", "Learning rate", r"learning_rate"),
    ("domain_weights", "Domain weights", r"domain_weight/.+"),
    ("domain_losses", "Per-domain loss", r"domain_loss/.+"),
    # the hypervolume rule logs its meta-reward and contribution under `reward_weight/` too: not weights, own panel
    ("reward_weighting", "Reward weighting signals (influence, hypervolume)",
     r"reward_influence/.+|reward_weight/(meta_reward|hv_contribution)"),
    ("reward_weights", "Reward weights", r"reward_weight/.+"),
)

Series = dict[str, tuple[list[int], list[float]]]  # metric name -> (steps, values)


def _number(value: Any) -> float | None:
    """A finite float, or None for anything a curve cannot show (strings, bools, None, nan, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def panel_of(metric: str) -> str | None:
    """The `PANELS` stem that draws ``metric`` (an `eval_` metric goes with its training metric), or None."""
    name = metric[len(EVAL_PREFIX):] if metric.startswith(EVAL_PREFIX) else metric
    return next((stem for stem, _, pattern in PANELS if re.fullmatch(pattern, name)), None)


def training_series(log_history: list[dict[str, Any]]) -> dict[str, Series]:
    """``{panel stem: {metric: (steps, values)}}`` from the Trainer's `log_history`, in logging order.

    Entries without a `step` and values that are not finite numbers are left out; the end-of-training summary
    (`train_loss`, `train_runtime`, ...) matches no panel.
    """
    panels: dict[str, Series] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for metric, raw in entry.items():
            value, stem = _number(raw), panel_of(metric)
            if value is None or stem is None:
                continue
            steps, values = panels.setdefault(stem, {}).setdefault(metric, ([], []))
            steps.append(int(step))
            values.append(value)
    return {stem: panels[stem] for stem, _, _ in PANELS if stem in panels}  # the order of `PANELS`, for the card


def evaluation_bars(results: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``{metric: {"before"/"after": {domain: value}}}`` from `eval_results.json`.

    Held-out generations: every reward's per-domain mean (`results[when]["rewards"]`; results written before rewards
    were named hold `results[when]["accuracy"]` only). A reward model's held-out pairwise accuracy is an "after" value.
    Domains whose value is None (no completion scored) are left out.
    """
    bars: dict[str, dict[str, dict[str, float]]] = {}
    for when in ("before", "after"):
        result = results.get(when)
        if not isinstance(result, dict):
            continue
        per_reward = result.get("rewards") or {"accuracy": result.get("accuracy") or {}}
        for reward, means in per_reward.items():
            values = {domain: v for domain, raw in (means or {}).items() if (v := _number(raw)) is not None}
            if values:
                bars.setdefault(reward, {})[when] = values
    pairwise = (results.get("reward") or {}).get("pairwise_accuracy") or {}
    values = {domain: v for domain, raw in pairwise.items() if (v := _number(raw)) is not None}
    if values:
        bars["pairwise_accuracy"] = {"after": values}
    return bars


def _domain_order(domains) -> list[str]:
    return sorted(d for d in domains if d != "all") + (["all"] if "all" in domains else [])


def curve_figure(stem: str, series: Series):
    """One panel: a line per metric over steps (evaluation metrics dashed, with markers)."""
    from matplotlib.figure import Figure

    title = next(title for name, title, _ in PANELS if name == stem)
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    for metric, (steps, values) in series.items():
        style = {"linestyle": "--", "marker": "o"} if metric.startswith(EVAL_PREFIX) else {}
        axes.plot(steps, values, label=metric, marker="." if len(steps) < 50 else None, **style)
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)
    if stem == "learning_rate":
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    axes.legend(fontsize="small", ncols=1 + len(series) // 8)
    return figure


def evaluation_figure(bars: dict[str, dict[str, dict[str, float]]]):
    """A row per metric: per domain, a bar before and a bar after training, with the value written on it."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 2.6 * len(bars) + 0.6), layout="constrained")
    axes_list = figure.subplots(len(bars), 1, squeeze=False)[:, 0]
    for axes, (metric, by_when) in zip(axes_list, bars.items()):
        domains = _domain_order({d for values in by_when.values() for d in values})
        width = 0.8 / len(by_when)
        for i, (when, values) in enumerate(by_when.items()):
            xs = [j + (i - (len(by_when) - 1) / 2) * width for j in range(len(domains))]
            heights = [values.get(domain, math.nan) for domain in domains]
            drawn = axes.bar(xs, heights, width, label=when)
            axes.bar_label(drawn, fmt="%.3g", fontsize="x-small")
        axes.set_xticks(range(len(domains)), domains)
        if all(0.0 <= v <= 1.0 for values in by_when.values() for v in values.values()):
            axes.set_ylim(0.0, 1.1)  # pass rates: the whole scale, so 0% looks like 0% and not like noise
        else:
            axes.axhline(0.0, color="black", linewidth=0.5)
        axes.set_title(f"Held-out {metric} per domain")
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle("Evaluation before / after training")
    return figure


def read_run(output_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(log_history, eval results)`` of a run directory.

    The log history is `output_dir/trainer_state.json` (written at the end of every run), else that of the newest
    checkpoint (runs saved before that file was written); missing files give empty values.
    """
    output_dir = Path(output_dir)
    # Not `alignment.resume.checkpoints_newest_first`: it imports the trainers (10 s), and `alignment-plot` should not.
    steps = {d: int(m.group(1)) for d in output_dir.glob("checkpoint-*") if (m := CHECKPOINT_NAME.fullmatch(d.name))}
    candidates = [output_dir, *sorted(steps, key=steps.get, reverse=True)]
    state_file = next((d / TRAINER_STATE_NAME for d in candidates if (d / TRAINER_STATE_NAME).is_file()), None)
    log_history = json.loads(state_file.read_text()).get("log_history", []) if state_file else []
    eval_file = output_dir / EVAL_RESULTS_NAME
    results = json.loads(eval_file.read_text()) if eval_file.is_file() else {}
    return log_history, results


def run_figures(output_dir: str | Path) -> dict[str, Any]:
    """``{file stem: Figure}`` for every picture the run has data for (see the module docstring)."""
    log_history, results = read_run(output_dir)
    figures = {stem: curve_figure(stem, series) for stem, series in training_series(log_history).items()}
    bars = evaluation_bars(results)
    if bars:
        figures["evaluation"] = evaluation_figure(bars)
    return figures


def write_plots(output_dir: str | Path, plots_dir: str | Path | None = None) -> list[Path]:
    """Draw the run in ``output_dir`` into ``plots_dir`` (default `output_dir/plots`); returns the PNGs written.

    Raises `FileNotFoundError` when the directory holds neither a `trainer_state.json` (in it or in a checkpoint) nor
    an `eval_results.json`.
    """
    output_dir = Path(output_dir)
    figures = run_figures(output_dir)
    if not figures:
        raise FileNotFoundError(
            f"Nothing to plot in {output_dir}: no {TRAINER_STATE_NAME} with logged metrics (in it or in a "
            f"checkpoint-*/) and no {EVAL_RESULTS_NAME}. Give the `output_dir` of a finished run.")
    plots_dir = Path(plots_dir) if plots_dir is not None else output_dir / PLOTS_SUBDIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, figure in figures.items():
        path = plots_dir / f"{stem}.png"
        figure.savefig(path, dpi=100)
        written.append(path)
    return written


def plot_run(output_dir: str | Path) -> list[Path]:
    """`write_plots` for a run that just finished, never raising: pictures are not worth a lost run.

    Returns the PNGs written in `output_dir/plots` ([] on any failure, which is logged). A merged model's folder gets
    a copy of them in `finalize_run`, with its card.
    """
    try:
        written = write_plots(output_dir)
    except ImportError as error:
        logger.warning("No plots of the run: %s. `pip install matplotlib` (a dependency of this package) and redraw "
                       "with `alignment-plot %s`.", error, output_dir)
        return []
    except Exception:  # any failure to draw: the model and its results are saved; the run goes on
        logger.exception("Drawing the plots of %s failed; the run goes on (redraw with `alignment-plot %s`).",
                         output_dir, output_dir)
        return []
    print(f"Plots written to {Path(output_dir) / PLOTS_SUBDIR}: {', '.join(p.name for p in written)}")
    return written


def iteration_series(records: list[dict[str, Any]]) -> dict[str, Series]:
    """``{row title: {label: (rounds, values)}}`` from `iterations.json` (`alignment.commands.iterate_cli`).

    Held-out score per domain after each round, with round 0 the starting model (round 1's `accuracy_before`, when
    measured); the pass rate and mean score of the answers each round sampled to build its pairs.
    """
    rows: dict[str, Series] = {"Held-out score per domain (round 0: the start model)": {},
                               "Pass rate of the sampled answers": {}, "Mean score of the sampled answers": {}}
    held_out, pass_rate, mean_score = rows.values()
    points = [(0, records[0].get("accuracy_before"))] if records else []
    points += [(record["round"], record.get("accuracy_after")) for record in records]
    for r, means in points:
        for domain in _domain_order(set(means or {})):
            if (value := _number(means[domain])) is not None:
                rounds, values = held_out.setdefault(domain, ([], []))
                rounds.append(r)
                values.append(value)
    for record in records:
        for row, key in ((pass_rate, "pass_rate"), (mean_score, "mean_score")):
            if (value := _number(record.get(key))) is not None:
                rounds, values = row.setdefault(key, ([], []))
                rounds.append(record["round"])
                values.append(value)
    return {title: series for title, series in rows.items() if series}


def plot_iterations(output_dir: str | Path, records: list[dict[str, Any]]) -> Path | None:
    """`output_dir/plots/iterations.png` of an iterative run, never raising (a failure is logged)."""
    try:
        from matplotlib.figure import Figure

        rows = iteration_series(records)
        if not rows:
            return None
        figure = Figure(figsize=(7, 2.6 * len(rows) + 0.4), layout="constrained")
        for axes, (title, series) in zip(figure.subplots(len(rows), 1, squeeze=False)[:, 0], rows.items()):
            for label, (rounds, values) in series.items():
                axes.plot(rounds, values, marker="o", label=label)
            axes.set_title(title)
            axes.set_xticks(sorted({r for rounds, _ in series.values() for r in rounds}))
            axes.grid(alpha=0.3)
            axes.legend(fontsize="small")
        axes.set_xlabel("round")
        path = Path(output_dir) / PLOTS_SUBDIR / "iterations.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        return path
    except Exception:  # pictures are not worth a lost round
        logger.exception("Drawing %s/%s/iterations.png failed; the run goes on.", output_dir, PLOTS_SUBDIR)
        return None


def drop_missing_reporters(training_args) -> None:
    """Keep `report_to: tensorboard` only when TensorBoard is installed (the `tensorboard` extra), else warn once.

    Recipes ask for TensorBoard; without it, transformers' `TensorBoardCallback` raises at Trainer init. The loss
    history is kept either way (`trainer_state.json`, `plots/`).
    """
    from transformers.integrations import is_tensorboard_available

    report_to = list(training_args.report_to or [])
    if "tensorboard" not in report_to:
        return
    if is_tensorboard_available():
        logger.info("TensorBoard logs go to %s (set TENSORBOARD_LOGGING_DIR to change it).",
                    f"$TENSORBOARD_LOGGING_DIR or {training_args.output_dir}/runs/")
        return
    training_args.report_to = [name for name in report_to if name != "tensorboard"]
    say = logger.warning if training_args.should_log else logger.debug  # once, not once per rank
    say("report_to: tensorboard, but TensorBoard is not installed (`pip install 'alignment-toolkit[tensorboard]'`): "
        "not logging to it. Curves are kept in trainer_state.json and drawn in %s/%s/.", training_args.output_dir,
        PLOTS_SUBDIR)


def plot_main(argv: list[str] | None = None) -> list[Path]:
    """`alignment-plot OUTPUT_DIR [--plots_dir DIR]`: redraw the pictures of a past run."""
    parser = argparse.ArgumentParser(
        prog="alignment-plot",
        description="Draw the training curves (trainer_state.json) and the before/after evaluation "
        "(eval_results.json) of a run directory as PNGs in OUTPUT_DIR/plots.")
    parser.add_argument("output_dir", help="the run's output_dir")
    parser.add_argument("--plots_dir", default=None, help="where the PNGs go (default: OUTPUT_DIR/plots)")
    args = parser.parse_args(argv)
    if not Path(args.output_dir).is_dir():
        parser.error(f"{args.output_dir} is not a directory: give the `output_dir` of a run.")
    try:
        written = write_plots(args.output_dir, args.plots_dir)
    except FileNotFoundError as error:
        parser.error(str(error))
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    plot_main()
