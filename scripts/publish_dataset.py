"""Snakemake script for rule dataset_publish: publish to gs:// if configured, then write dataset.json."""

from nanogerman.dataset_publish import finish_dataset
from nanogerman.stage import run_stage


def main(snakemake):
    finish_dataset(snakemake.input.build, snakemake.output.manifest, snakemake.params.publish_to)


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
