"""Snakemake script for rule contamination_summary: the contamination share per task, as Markdown and CSV."""

from nanogerman.clean_subsets import clean_name, clean_rows
from nanogerman.contamination import contamination_rows, write_contamination_summary
from nanogerman.stage import run_stage


def main(snakemake):
    rows = contamination_rows(list(snakemake.input.results))
    rows = clean_rows(rows, [clean_name(task) for task in snakemake.params.clean])  # <task>_clean rows, if evaluated
    write_contamination_summary(rows, snakemake.output.markdown, snakemake.output.csv, n=snakemake.params.n)


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
