"""Results report: the seed's overview table built from the workflow's own result files.

Inputs, each read by one small function (adapt a changed key there):


- the training stage's ``train.json`` and its metrics JSONL, and lm-eval's results JSON,
  through :mod:`nanogerman.report_data`;
- the tokenizer evaluation's per-tokenizer JSON, through :mod:`nanogerman.tokenizer_eval_summary`.

Outputs: the overview (a row per model, a column per task metric, Avg., flags), the run
table and the tokenizer table as Markdown, CSV and LaTeX (:mod:`nanogerman.report_tables`),
an HTML page of the Markdown for the Snakemake report, plots (SVG and PNG,
:mod:`nanogerman.report_plots`) and ``provenance.json``. Settings, chance levels and sanity
flags: :mod:`nanogerman.report_flags`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from nanogerman.atomic import atomic_path, write_json
from nanogerman.curves import eval_curve, no_improvement_message, overfitting_step, read_metrics
from nanogerman.provenance import file_sha256, git_commit
from nanogerman.report_data import ReportError, assemble_models, read_json, read_loss_curve, read_train_manifest
from nanogerman.report_flags import ReportSettings
from nanogerman.report_plots import plot_loss_curves, plot_tasks, plot_tokenizers
from nanogerman.report_tables import (
    found_tasks,
    markdown_report,
    markdown_to_html,
    model_flags,
    model_provenance,
    overview_frame,
    overview_table,
    report_versions,
    run_table,
    runs_frame,
    select_columns,
    tokenizers_frame,
)
from nanogerman.tokenizer_eval_summary import latex_table as tokenizer_latex
from nanogerman.tokenizer_eval_summary import load_results

log = logging.getLogger(__name__)


# --- the whole report ----------------------------------------------------------------------------


OUTPUT_KEYS = (
    "overview_md",
    "overview_csv",
    "overview_tex",
    "overview_html",
    "runs_csv",
    "runs_tex",
    "tokenizers_csv",
    "tokenizers_tex",
    "provenance",
)


def write_text(destination: str | Path, text: str) -> None:
    with atomic_path(destination) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_csv(destination: str | Path, frame) -> None:
    with atomic_path(destination) as temporary:
        frame.to_csv(temporary, index=False)


def write_report(
    *,
    runs: Sequence[str | Path],
    curves: Sequence[str | Path],
    evaluations: dict[str, Sequence[str | Path]],
    tokenizers: Sequence[str | Path],
    settings: ReportSettings,
    checkpoint_curves: Sequence[str | Path] = (),
    outputs: dict[str, str | Path],
    plots_dir: str | Path,
    commit: str | None = None,
    contamination: Sequence[str | Path] = (),
    comparisons: Sequence[str | Path] = (),
) -> dict:
    """Read every input, write every table, page and plot; returns the provenance record."""

    if len(runs) != len(curves):
        raise ReportError(f"report: {len(runs)} training manifests but {len(curves)} metrics files")
    missing = [key for key in OUTPUT_KEYS if key not in outputs]
    if missing:
        raise ValueError(f"write_report: outputs lacks {', '.join(missing)}")
    commit = commit or git_commit()
    run_list = [read_train_manifest(path) for path in runs]
    curve_list = [read_loss_curve(path) for path in curves]
    metrics = [read_metrics(path) for path in curves]
    stalled = no_improvement_message(checkpoint_curves)
    run_list = [
        replace(run, overfitting_from=overfitting_step(records), stalled=stalled.get(run.name))
        for run, records in zip(run_list, metrics, strict=False)
    ]
    models = assemble_models(run_list, evaluations)
    from nanogerman.contamination import contamination_section
    from nanogerman.significance import comparisons_section
    from nanogerman.suites import recorded_chances, task_notes

    settings = replace(
        settings,
        chance={
            **recorded_chances(path for paths in evaluations.values() for path in paths if str(path).endswith("lm_eval.json")),
            **settings.chance,
        },
    )
    columns = select_columns(models, settings)
    for path in tokenizers:
        read_json(path, "tokenizer evaluation result")  # one-line error for a missing or broken file
    tokenizer_results = load_results(tokenizers)
    flags = settings.flags

    page = markdown_report(models, columns, run_list, tokenizer_results, settings, commit)
    page += "".join(f"\n{note}\n" for note in task_notes([column.task for column in columns]))
    page += contamination_section(contamination, found_tasks(models)) + comparisons_section(comparisons)
    write_text(outputs["overview_md"], page)
    write_text(outputs["overview_html"], markdown_to_html(page))
    write_csv(outputs["overview_csv"], overview_frame(models, columns, flags, commit))
    write_text(outputs["overview_tex"], overview_table(models, columns, flags).latex())
    write_csv(outputs["runs_csv"], runs_frame(run_list, flags, commit))
    write_text(outputs["runs_tex"], run_table(run_list, flags).latex())
    write_csv(outputs["tokenizers_csv"], tokenizers_frame(tokenizer_results, commit))
    write_text(
        outputs["tokenizers_tex"], tokenizer_latex(tokenizer_results) if tokenizer_results else "% no tokenizer evaluation\n"
    )

    plots = Path(plots_dir)
    plot_loss_curves(run_list, curve_list, flags, plots, eval_curves=[eval_curve(records) for records in metrics])
    plot_tasks(models, columns, flags, plots)
    plot_tokenizers(tokenizer_results, plots / "tokenizers")

    inputs = [
        *runs,
        *curves,
        *(path for paths in evaluations.values() for path in paths),
        *tokenizers,
        *contamination,
        *comparisons,
        *checkpoint_curves,
    ]
    record = {
        "git_commit": commit,
        "versions": report_versions(),
        "inputs": {str(path): file_sha256(path) for path in inputs},
        "models": {model.name: {"kind": model.kind, **model_provenance(model, commit)} for model in models},
        "settings": {
            "columns": [column.key for column in columns],
            "averaged": [column.key for column in columns if column.averaged],
            "chance": {column.key: column.chance for column in columns if column.metric.accuracy},
            "flags": {
                "chance_stderrs": flags.chance_stderrs,
                "min_loss_drop": flags.min_loss_drop,
                "learning_rate_range": list(flags.learning_rate_range),
            },
        },
    }
    write_json(outputs["provenance"], record)
    flagged = sum(bool(model_flags(model, columns, flags)) for model in models)
    log.info(
        "report: %d models, %d columns, %d runs, %d tokenizers; %d models flagged",
        len(models),
        len(columns),
        len(run_list),
        len(tokenizer_results),
        flagged,
    )
    return record
