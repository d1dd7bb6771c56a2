"""Snakemake script for rule tokenizer_train: train one tokenizer and export it for Hugging Face."""

from nanogerman.stage import run_stage
from nanogerman.tokenizer_training import TokenizerSpec, train_tokenizer


def main(snakemake):
    train_tokenizer(TokenizerSpec.from_config(snakemake.params.spec), list(snakemake.input.shards), snakemake.output.folder)


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
