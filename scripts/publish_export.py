"""Snakemake script for rule export_publish: upload an exported folder to a Hub model repo (HF_TOKEN, HF_ENDPOINT)."""

from nanogerman.export_publish import publish_export
from nanogerman.stage import run_stage


def main(snakemake):
    publish_export(snakemake.input.folder, snakemake.params.repo_id, snakemake.output.receipt, private=snakemake.params.private)


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
