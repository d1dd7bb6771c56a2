"""Snakemake script for rule eval_summary: every model's scores side by side (results/eval/summary.tsv)."""

from nanogerman.evaluation_summary import summary_rows, write_summary
from nanogerman.stage import run_stage


def main(snakemake):
    write_summary(summary_rows(snakemake.params.results), snakemake.output.table)


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
