# Results report: the overview table (a row per model, a column per task metric, Avg., flags), the
# run and tokenizer tables, plots and provenance in results/report/. Every output is marked for
# `snakemake --report results/report.html` (captions in report/*.rst).
# Inputs are what the other stages define: runs (rules/train.smk), tokenizer results
# (rules/tokenizer_eval.smk) and, once rules/evaluate.smk defines eval_results(), lm-eval results.

import sys as _sys
from pathlib import Path as _Path

from nanogerman.config import ConfigError as _ConfigError
from nanogerman.report_flags import ReportSettings as _ReportSettings
from nanogerman.report_plots import tokenizer_plot_names as _tokenizer_plot_names

REPORT = f"{RESULTS}/report"

try:
    REPORT_SETTINGS = _ReportSettings.from_config(config)
except _ConfigError as error:
    _sys.stderr.write(f"{error}\n")
    _sys.exit(1)


report: "../report/workflow.rst"


def report_runs():
    """The training runs (rules/train.smk)."""
    return train_runs() if "train_runs" in globals() else []


def report_evaluations():
    """{model name: [results files]}: lm-eval JSON (and any file in its 'results' shape) per model, from rules/evaluate.smk."""
    return (
        {name: list(paths) for name, paths in eval_results().items()}
        if "eval_results" in globals()
        else {}
    )


def report_tokenizer_results():
    """The tokenizer evaluation's per-tokenizer JSON files (rules/tokenizer_eval.smk); none when it is not configured."""
    if "tokenizer_eval_outputs" not in globals() or not tokenizer_eval_outputs():
        return []
    return [f"{TOKENIZER_EVAL}/{name}.json" for name in tokenizer_eval_names()]


def report_checkpoint_curves():
    """Each run's curves.csv of evaluated checkpoints (rules/checkpoints.smk, included after this file)."""
    return (
        [checkpoint_curves(run)["csv"] for run in checkpoint_eval_runs()]
        if "checkpoint_eval_runs" in globals()
        else []
    )


def report_comparisons():
    """The comparisons table (rules/significance.smk), where the config compares runs."""
    if "comparison_outputs" not in globals():
        return []
    return [path for path in comparison_outputs() if path.endswith(".md")]


def report_outputs():
    return [f"{REPORT}/overview.md", f"{REPORT}/overview.html"]


def _report_plots(name, fmt):
    return f"{REPORT}/plots/{name}.{fmt}"


rule results_report:
    input:
        runs=[train_manifest(name) for name in report_runs()],
        curves=[
            str(_Path(train_manifest(name)).with_name("metrics.jsonl"))
            for name in report_runs()
        ],
        evaluations=[path for paths in report_evaluations().values() for path in paths],
        tokenizers=report_tokenizer_results(),
        contamination=(
            contamination_results() if "contamination_results" in globals() else []
        ),
        checkpoints=lambda wildcards: report_checkpoint_curves(),
        comparisons=lambda wildcards: report_comparisons(),
    output:
        overview_html=report(
            f"{REPORT}/overview.html",
            category="1. Overview",
            caption="../report/overview.rst",
        ),
        overview_md=report(
            f"{REPORT}/overview.md",
            category="2. Tables",
            subcategory="Models",
            caption="../report/tables.rst",
        ),
        overview_csv=report(
            f"{REPORT}/overview.csv",
            category="2. Tables",
            subcategory="Models",
            caption="../report/tables.rst",
        ),
        overview_tex=report(
            f"{REPORT}/overview.tex",
            category="2. Tables",
            subcategory="Models",
            caption="../report/tables.rst",
        ),
        runs_csv=report(
            f"{REPORT}/runs.csv",
            category="2. Tables",
            subcategory="Training runs",
            caption="../report/runs.rst",
        ),
        runs_tex=report(
            f"{REPORT}/runs.tex",
            category="2. Tables",
            subcategory="Training runs",
            caption="../report/runs.rst",
        ),
        tokenizers_csv=report(
            f"{REPORT}/tokenizers.csv",
            category="2. Tables",
            subcategory="Tokenizers",
            caption="../report/tokenizers.rst",
        ),
        tokenizers_tex=report(
            f"{REPORT}/tokenizers.tex",
            category="2. Tables",
            subcategory="Tokenizers",
            caption="../report/tokenizers.rst",
        ),
        provenance=report(
            f"{REPORT}/provenance.json",
            category="4. Provenance",
            caption="../report/provenance.rst",
        ),
        loss_curves=report(
            _report_plots("loss_curves", "svg"),
            category="3. Plots",
            subcategory="Training",
            caption="../report/loss_curves.rst",
        ),
        tasks=report(
            _report_plots("tasks", "svg"),
            category="3. Plots",
            subcategory="Evaluation",
            caption="../report/tasks.rst",
        ),
        tokenizer_plots=report(
            [
                _report_plots(f"tokenizers/{name}", "svg")
                for name in _tokenizer_plot_names()
            ],
            category="3. Plots",
            subcategory="Tokenizers",
            caption="../report/tokenizer_plots.rst",
        ),
        png=[
            _report_plots(name, "png")
            for name in (
                "loss_curves",
                "tasks",
                *(f"tokenizers/{key}" for key in _tokenizer_plot_names()),
            )
        ],
    log:
        f"{RESULTS}/logs/report.log",
    localrule: True
    params:
        settings=REPORT_SETTINGS.as_param(),  # builtins: Snakemake reruns the report when one changes
        evaluations=report_evaluations(),
        plots_dir=lambda wildcards, output: str(_Path(output.loss_curves).parent),
        project_root=workflow.basedir,
    script:
        "../scripts/make_report.py"
