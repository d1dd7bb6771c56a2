"""Snakemake script for rule dataset_assemble: link the parts into the TFDS folder and write its metadata."""

from nanogerman.dataset import assemble_dataset
from nanogerman.stage import run_stage


def main(snakemake):
    assemble_dataset(
        {"train": list(snakemake.input.train), "validation": list(snakemake.input.validation)},
        snakemake.params.data_dir,
        snakemake.output.build,
        name=snakemake.params.name,
        version=snakemake.params.version,
        file_format=snakemake.params.file_format,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
