"""Snakemake script for rule contamination_merge: the union of the training shards' n-gram hashes."""

from nanogerman.contamination import merge_ngrams
from nanogerman.stage import run_stage


def main(snakemake):
    merge_ngrams(list(snakemake.input.shards), snakemake.output.ngrams, n=snakemake.params.n)


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
