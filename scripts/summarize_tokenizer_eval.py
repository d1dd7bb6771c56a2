"""Snakemake script for rule tokenizer_eval_summary: Markdown, CSV and LaTeX tables and plots."""

from nanogerman.stage import run_stage
from nanogerman.tokenizer_eval_summary import summarize


def main(snakemake):
    summarize(
        list(snakemake.input.results),
        markdown=snakemake.output.markdown,
        csv=snakemake.output.csv,
        per_dataset_csv=snakemake.output.per_dataset_csv,
        latex=snakemake.output.latex,
        plots_dir=snakemake.params.plots_dir,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
