"""Snakemake script for rule contamination_summary: the contamination share per task, as Markdown and CSV."""

from nanogerman.contamination import contamination_rows, write_contamination_summary
from nanogerman.stage import run_stage


def main(snakemake):
    write_contamination_summary(
        contamination_rows(list(snakemake.input.results)), snakemake.output.markdown, snakemake.output.csv
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
