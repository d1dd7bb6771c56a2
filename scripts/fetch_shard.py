"""Snakemake script for rule corpus_shard: fetch, check and record one corpus shard."""

from nanogerman.corpus import ShardSource, fetch_shard
from nanogerman.stage import run_stage


def main(snakemake):
    # How to download (retries, backoff) is read here, not passed as a param: changing it must not refetch the shards.
    corpus = dict(snakemake.params.source, download=snakemake.config["corpus"].get("download", {}))
    fetch_shard(
        ShardSource.from_config(corpus),
        int(snakemake.params.index),
        snakemake.output.shard,
        snakemake.output.manifest,
        max_empty_share=snakemake.params.max_empty_share,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
