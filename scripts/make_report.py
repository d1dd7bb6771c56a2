"""Snakemake script for rule results_report: overview, run and tokenizer tables, plots, provenance."""

from nanogerman.provenance import git_commit
from nanogerman.report import write_report
from nanogerman.report_flags import ReportSettings
from nanogerman.stage import run_stage


def main(snakemake):
    write_report(
        runs=list(snakemake.input.runs),
        curves=list(snakemake.input.curves),
        evaluations=snakemake.params.evaluations,
        tokenizers=list(snakemake.input.tokenizers),
        checkpoint_curves=list(snakemake.input.checkpoints),
        settings=ReportSettings.from_param(snakemake.params.settings),
        outputs=dict(snakemake.output.items()),
        plots_dir=snakemake.params.plots_dir,
        commit=git_commit(snakemake.params.project_root),
        contamination=list(snakemake.input.contamination),
        comparisons=list(snakemake.input.comparisons),
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
