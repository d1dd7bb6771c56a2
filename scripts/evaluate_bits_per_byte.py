"""Snakemake script for rule eval_bits_per_byte: one model's bits per byte on the held-out shards."""

from pathlib import Path

from nanogerman.evaluation import (
    ForwardSettings,
    evaluate_bits_per_byte,
    hub_offline_if_local,
    model_spec_of,
    quiet_job,
    use_threads,
)
from nanogerman.stage import run_stage
from nanogerman.tokenizer_training import iter_texts


def main(snakemake):
    quiet_job()
    use_threads(snakemake.threads)
    section = snakemake.params.section
    spec = model_spec_of(snakemake.wildcards.model, snakemake.params.reference, run_folder=snakemake.input.get("model"))
    hub_offline_if_local(spec)  # a local model: no Hub requests
    texts = list(iter_texts(list(snakemake.input.shards)))
    if section["max_documents"] is not None:
        texts = texts[: section["max_documents"]]
    evaluate_bits_per_byte(
        spec,
        ForwardSettings(**snakemake.params.settings),
        texts,
        snakemake.output.results,
        max_length=section["max_length"],
        source={
            "shard_set": section["shards"],
            "shards": [Path(path).name for path in snakemake.input.shards],
            "max_documents": section["max_documents"],
        },
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
