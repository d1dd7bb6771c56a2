"""Snakemake script for rule corpus_shard: fetch, check and record one corpus shard."""

from nanogerman.corpus import ShardSource, fetch_shard
from nanogerman.stage import run_stage


def main(snakemake):
    # The one script that reads snakemake.config, on purpose: corpus.download says how to download (retries,
    # backoff), not what, so a change must not refetch the shards; as a param, Snakemake would record it and rerun them.
    corpus = dict(snakemake.params.source, download=snakemake.config["corpus"].get("download", {}))
    fetch_shard(
        ShardSource.from_config(corpus),
        int(snakemake.params.index),
        snakemake.output.shard,
        snakemake.output.manifest,
        max_empty_share=snakemake.params.max_empty_share,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
