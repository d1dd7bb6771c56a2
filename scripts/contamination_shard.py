"""Snakemake script for rule contamination_shard: the distinct hashed n-grams of one training shard."""

from nanogerman.contamination import shard_ngrams
from nanogerman.stage import run_stage


def main(snakemake):
    shard_ngrams([snakemake.input.shard], snakemake.output.ngrams, n=snakemake.params.n)


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
