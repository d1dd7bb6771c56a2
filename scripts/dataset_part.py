"""Snakemake script for rule dataset_part: serialize one corpus shard into TFDS record files."""

from nanogerman.dataset import write_part
from nanogerman.stage import run_stage


def main(snakemake):
    write_part(
        snakemake.input.shard,
        snakemake.output.part,
        file_format=snakemake.params.file_format,
        files_per_shard=int(snakemake.params.files_per_shard),
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
