"""Tokenizer evaluation summary: GerTokEval's tables (Markdown with the best value in bold, CSV, LaTeX) and plots.

Reads the per-tokenizer results that :mod:`nanogerman.tokenizer_eval` writes (one JSON
each) and renders them; it computes nothing new. The report stage reuses the tables and
plots for its tokenizer section.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path

from nanogerman.atomic import atomic_path
from nanogerman.plots import pyplot, save_figure
from nanogerman.tables import best_positions, latex_escape
from nanogerman.tokenizer_eval import ALL_METRICS, METRIC_BY_KEY, METRICS
from nanogerman.tokenizer_eval_data import TokenizerEvalError

log = logging.getLogger(__name__)


def load_results(paths: Iterable[str | Path]) -> list[dict]:
    return [json.loads(Path(path).read_text(encoding="utf-8")) for path in paths]


def format_metric(key: str, value: float | None) -> str:
    """A metric in the seed's format (``0.204``, ``92.4%``, ``0.0090``, ``5.15``, ``26.9``); ``---`` if missing."""
    return "---" if value is None else METRIC_BY_KEY[key].fmt.format(value)


def best_rows(values: list[float | None], key: str) -> set[int]:
    """Positions of the best value of ``key`` (ties on the printed value all count as best)."""
    return best_positions(
        values, higher_is_better=METRIC_BY_KEY[key].higher_is_better, fmt=lambda value: format_metric(key, value)
    )


def metric_values(results: list[dict], key: str, dataset: str | None = None) -> list[float | None]:
    """``key`` for each result: pooled, or for one dataset (None where a result lacks it)."""
    if dataset is None:
        return [result["metrics"].get(key) for result in results]
    return [dataset_entry(result, dataset).get("metrics", {}).get(key) for result in results]


def dataset_entry(result: dict, name: str) -> dict:
    return next((entry for entry in result["datasets"] if entry["name"] == name), {})


def markdown_table(results: list[dict]) -> str:
    """The seed's table: one row per tokenizer, GerTokEval's five columns, the best value per column in bold."""
    best = {metric.key: best_rows(metric_values(results, metric.key), metric.key) for metric in METRICS}
    lines = [
        "| Tokenizer | " + " | ".join(metric.title for metric in METRICS) + " |",
        "|" + "---|" * (len(METRICS) + 1),
    ]
    for row, result in enumerate(results):
        cells = [result["name"]]
        for metric in METRICS:
            text = format_metric(metric.key, result["metrics"].get(metric.key))
            cells.append(f"**{text}**" if row in best[metric.key] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def dataset_names(results: list[dict]) -> list[str]:
    names: list[str] = []
    for result in results:
        names.extend(entry["name"] for entry in result["datasets"] if entry["name"] not in names)
    return names


def per_dataset_markdown(results: list[dict], key: str = "fertility") -> str:
    """One metric per dataset: a row per tokenizer, a column per dataset, the best per column in bold."""
    datasets = dataset_names(results)
    lines = ["| Tokenizer | " + " | ".join(datasets) + " |", "|" + "---|" * (len(datasets) + 1)]
    values = {name: metric_values(results, key, name) for name in datasets}
    best = {name: best_rows(values[name], key) for name in datasets}
    for row, result in enumerate(results):
        cells = [result["name"]]
        for name in datasets:
            text = format_metric(key, values[name][row])
            cells.append(f"**{text}**" if row in best[name] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(results: list[dict]) -> str:
    datasets = ", ".join(dataset_names(results))
    return (
        "# Tokenizer evaluation\n\n"
        f"GerTokEval's metrics on {datasets} (pooled). Best value per column in bold: lowest fertility, "
        "highest of the others (as in the seed's table).\n\n"
        + markdown_table(results)
        + "\n## Fertility per dataset\n\n"
        + per_dataset_markdown(results, "fertility")
    )


def summary_frame(results: list[dict]):
    """One row per tokenizer: name, kind, vocabulary size, totals and every metric at full precision."""
    import pandas as pd

    rows = []
    for result in results:
        row = {"tokenizer": result["name"], "kind": result["kind"], "path": result["path"], "vocab_size": result["vocab_size"]}
        row.update({key: result["totals"][key] for key in ("texts", "tokens", "bytes", "distinct_ids")})
        row.update({metric.key: result["metrics"].get(metric.key) for metric in ALL_METRICS})
        rows.append(row)
    return pd.DataFrame(rows)


def per_dataset_frame(results: list[dict]):
    """One row per tokenizer and dataset, every metric at full precision."""
    import pandas as pd

    rows = []
    for result in results:
        for dataset in result["datasets"]:
            row = {"tokenizer": result["name"], "dataset": dataset["name"]}
            row.update(
                {
                    key: dataset["totals"].get(key)
                    for key in ("texts", "tokens", "bytes", "distinct_ids", "empty_texts", "whitespace_texts_skipped")
                }
            )
            row.update({metric.key: dataset["metrics"].get(metric.key) for metric in ALL_METRICS})
            rows.append(row)
    return pd.DataFrame(rows)


def latex_table(results: list[dict]) -> str:
    """The Markdown table as a LaTeX tabular (booktabs), best values in ``\\textbf``."""
    import pandas as pd

    best = {metric.key: best_rows(metric_values(results, metric.key), metric.key) for metric in METRICS}
    rows = []
    for position, result in enumerate(results):
        row = {"Tokenizer": latex_escape(result["name"])}
        for metric in METRICS:
            text = latex_escape(format_metric(metric.key, result["metrics"].get(metric.key)))
            row[metric.title] = rf"\textbf{{{text}}}" if position in best[metric.key] else text
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["Tokenizer", *(metric.title for metric in METRICS)])
    return frame.to_latex(index=False, escape=False, column_format="l" + "r" * len(METRICS))


PLOT_NAMES = tuple(metric.key for metric in ALL_METRICS) + ("per_dataset",)


def plot_metric(results: list[dict], key: str, folder: str | Path) -> list[Path]:
    """A bar chart of one metric, a bar per tokenizer, labelled in the table's format."""
    plt = pyplot()
    metric = METRIC_BY_KEY[key]
    names = [result["name"] for result in results]
    values = metric_values(results, key)
    scale = 100 if key == "vocab_utilization" else 1
    heights = [math.nan if value is None else value * scale for value in values]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.6))
    best = best_rows(values, key)
    colors = ["tab:orange" if row in best else "tab:blue" for row in range(len(values))]
    bars = axes.bar(range(len(names)), heights, color=colors, tick_label=names)
    axes.bar_label(bars, labels=[format_metric(key, value) for value in values], fontsize=8)
    axes.set_ylabel(metric.title + (" (%)" if scale == 100 else ""))
    axes.set_title(f"{metric.title}: {metric.meaning}", fontsize=9)
    axes.tick_params(axis="x", labelrotation=30)
    axes.margins(y=0.15)
    try:
        return save_figure(figure, Path(folder), key)
    finally:
        plt.close(figure)


def plot_per_dataset(results: list[dict], folder: str | Path) -> list[Path]:
    """Every metric per dataset: a panel per metric, a group of bars per dataset, a bar per tokenizer."""
    plt = pyplot()
    datasets = dataset_names(results)
    columns = 3
    rows = math.ceil(len(ALL_METRICS) / columns)
    width = max(10.0, 0.9 * len(datasets) * max(1, len(results)) * columns / 3 + 4)
    figure, grid = plt.subplots(rows, columns, figsize=(width, 3.4 * rows), squeeze=False)
    bar_width = 0.8 / max(1, len(results))
    for panel, metric in zip(grid.flat, ALL_METRICS, strict=False):
        scale = 100 if metric.key == "vocab_utilization" else 1
        for offset, result in enumerate(results):
            values = [dataset_entry(result, name).get("metrics", {}).get(metric.key) for name in datasets]
            heights = [math.nan if value is None else value * scale for value in values]
            positions = [index + (offset - (len(results) - 1) / 2) * bar_width for index in range(len(datasets))]
            panel.bar(positions, heights, width=bar_width, label=result["name"])
        panel.set_xticks(range(len(datasets)), datasets, rotation=30, ha="right", fontsize=8)
        panel.set_title(metric.title + (" (%)" if scale == 100 else ""), fontsize=9)
    for panel in list(grid.flat)[len(ALL_METRICS) :]:
        panel.axis("off")
    handles, labels = grid.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    try:
        return save_figure(figure, Path(folder), "per_dataset")
    finally:
        plt.close(figure)


def summarize(
    result_paths: Iterable[str | Path],
    *,
    markdown: str | Path,
    csv: str | Path,
    per_dataset_csv: str | Path,
    latex: str | Path,
    plots_dir: str | Path,
) -> list[dict]:
    """Write the Markdown, CSV and LaTeX tables and the plots for the per-tokenizer results, in their order."""
    results = load_results(result_paths)
    if not results:
        raise TokenizerEvalError("tokenizer evaluation summary: no tokenizer results to summarize")
    with atomic_path(markdown) as temporary:
        temporary.write_text(markdown_report(results), encoding="utf-8")
    with atomic_path(csv) as temporary:
        summary_frame(results).to_csv(temporary, index=False)
    with atomic_path(per_dataset_csv) as temporary:
        per_dataset_frame(results).to_csv(temporary, index=False)
    with atomic_path(latex) as temporary:
        temporary.write_text(latex_table(results), encoding="utf-8")
    Path(plots_dir).mkdir(parents=True, exist_ok=True)
    for metric in ALL_METRICS:
        plot_metric(results, metric.key, plots_dir)
    plot_per_dataset(results, plots_dir)
    log.info("tokenizer evaluation summary: %d tokenizers, tables and %d plots written", len(results), len(PLOT_NAMES))
    return results
