"""The results report's plots (SVG and PNG): loss curves, a panel per task metric, the tokenizer metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from nanogerman.report_data import Model, Run
from nanogerman.report_flags import MARK_CHANCE, RUN_MARKS, FlagSettings, near_chance, run_flags
from nanogerman.report_tables import Column
from nanogerman.tables import MISSING, best_positions
from nanogerman.tokenizer_eval import METRICS as TOKENIZER_METRICS
from nanogerman.tokenizer_eval_summary import plot_metric

# --- plots ---------------------------------------------------------------------------------------


def plot_placeholder(folder: str | Path, name: str, message: str) -> list[Path]:
    """A figure that says why there is nothing to plot (the outputs exist either way)."""
    from nanogerman.plots import pyplot, save_figure

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5, 1.5))
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center")
    try:
        return save_figure(figure, Path(folder), name)
    finally:
        plt.close(figure)


def plot_loss_curves(
    runs: Sequence[Run],
    curves: Sequence[Sequence[tuple[int, float]]],
    flags: FlagSettings,
    folder: str | Path,
    name: str = "loss_curves",
    eval_curves: Sequence[Sequence[tuple[int, float]]] | None = None,
) -> list[Path]:
    """Every run's training loss (solid) and validation loss (dashed, same colour) on one chart, steps on a log scale; flags in the legend."""
    from nanogerman.plots import pyplot, save_figure

    if not any(curves):
        return plot_placeholder(folder, name, "no training runs")
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.2))
    eval_curves = eval_curves or [[] for _ in runs]
    for run, curve, validation in zip(runs, curves, eval_curves, strict=False):
        if not curve:
            continue
        found = run_flags(run, flags)
        label = run.name + "".join(f" {RUN_MARKS[key]} {message}" for key, message in found.items())
        (line,) = axes.plot([step + 1 for step, _ in curve], [loss for _, loss in curve], label=label, linewidth=1.2)
        if validation:
            axes.plot(
                [step + 1 for step, _ in validation],
                [loss for _, loss in validation],
                linestyle="--",
                marker="o",
                markersize=3,
                color=line.get_color(),
                linewidth=1.2,
                label=f"{run.name} validation",
            )
    axes.set_xscale("log")
    axes.set_xlabel("training step + 1 (log scale)")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title("Training loss (solid) and validation loss (dashed) of every run", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    try:
        return save_figure(figure, Path(folder), name)
    finally:
        plt.close(figure)


def plot_tasks(
    models: Sequence[Model], columns: Sequence[Column], flags: FlagSettings, folder: str | Path, name: str = "tasks"
) -> list[Path]:
    """A panel per task metric, a bar per model, whiskers of ± chance_stderrs standard errors, the chance level dashed.

    Bars within that many standard errors of chance are hatched and marked †; the best bar is orange.
    """
    from nanogerman.plots import pyplot, save_figure

    if not columns:
        return plot_placeholder(folder, name, "no evaluation results")
    plt = pyplot()
    per_row = min(4, len(columns))
    rows = math.ceil(len(columns) / per_row)
    width = max(3.0, 0.55 * len(models) + 1.6)
    figure, grid = plt.subplots(rows, per_row, figsize=(width * per_row, 3.6 * rows), squeeze=False)
    k = flags.chance_stderrs
    for panel, column in zip(grid.flat, columns, strict=False):
        scores = [model.scores.get((column.task, column.metric.key)) for model in models]
        values = [None if score is None else score.value for score in scores]
        best = best_positions(values, higher_is_better=column.metric.higher_is_better, fmt=column.metric.format)
        flagged = [near_chance(score, column.chance, k) for score in scores]
        heights = [math.nan if value is None else value for value in values]
        errors = [0.0 if score is None or score.stderr is None else k * score.stderr for score in scores]
        colors = ["tab:orange" if position in best else "tab:blue" for position in range(len(models))]
        bars = panel.bar(
            range(len(models)), heights, yerr=errors, capsize=3, color=colors, hatch=None, edgecolor="black", linewidth=0.5
        )
        for bar, flag in zip(bars, flagged, strict=False):
            if flag:
                bar.set_hatch("//")
                bar.set_alpha(0.6)
        labels = [
            MISSING if value is None else column.metric.format(value) + (MARK_CHANCE if flag else "")
            for value, flag in zip(values, flagged, strict=False)
        ]
        panel.bar_label(bars, labels=labels, fontsize=7, padding=2)
        if column.chance is not None:
            panel.axhline(column.chance, color="tab:red", linestyle="--", linewidth=1, label=f"chance {column.chance:g}")
            panel.legend(fontsize=7, loc="lower right")
        panel.set_xticks(range(len(models)), [model.name for model in models], rotation=30, ha="right", fontsize=8)
        panel.set_title(column.title, fontsize=9)
        panel.margins(y=0.2)
    for panel in list(grid.flat)[len(columns) :]:
        panel.axis("off")
    figure.suptitle(
        f"Whiskers: ± {k:g} standard errors. Hatched bars ({MARK_CHANCE}): within {k:g} standard errors of chance "
        "(dashed line). Orange: best.",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    try:
        return save_figure(figure, Path(folder), name)
    finally:
        plt.close(figure)


def plot_tokenizers(results: Sequence[dict], folder: str | Path) -> list[Path]:
    """The tokenizer evaluation's bar chart per GerTokEval metric (``tokenizer_eval_summary.plot_metric``), in ``folder``."""

    written = []
    for metric in TOKENIZER_METRICS:
        if results:
            written += plot_metric(list(results), metric.key, folder)
        else:
            written += plot_placeholder(folder, metric.key, "no tokenizer evaluation")
    return written


def tokenizer_plot_names() -> list[str]:

    return [metric.key for metric in TOKENIZER_METRICS]
