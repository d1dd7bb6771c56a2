"""Snakemake script for rule eval_comparisons: paired differences per task for the pairs of runs the config compares."""

from nanogerman.significance import compare_results, write_comparisons
from nanogerman.stage import run_stage


def main(snakemake):
    comparisons = compare_results(snakemake.params.pairs, snakemake.params.results, seed=snakemake.params.seed)
    write_comparisons(comparisons, snakemake.output.markdown, snakemake.output.csv)


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
