"""Snakemake script for rule tokenizer_eval_dataset: fetch the texts of one Hub evaluation dataset."""

from nanogerman.stage import run_stage
from nanogerman.tokenizer_eval_data import HubDataset, fetch_hub_dataset


def main(snakemake):
    download = snakemake.params.download
    fetch_hub_dataset(
        HubDataset.from_config(snakemake.params.spec),
        snakemake.output.texts,
        snakemake.output.manifest,
        retries=int(download.get("retries", 5)),
        backoff_seconds=float(download.get("backoff_seconds", 2.0)),
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
