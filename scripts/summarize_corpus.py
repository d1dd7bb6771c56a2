"""Snakemake script for rule corpus_summary: totals per shard set from the shard manifests."""

from nanogerman.corpus import summarize_corpus
from nanogerman.stage import run_stage

run_stage(
    snakemake,  # noqa: F821 (injected by Snakemake)
    lambda: summarize_corpus(snakemake.input.manifests, snakemake.params.shard_sets, snakemake.output.summary),  # noqa: F821
)
