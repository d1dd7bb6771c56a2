"""Snakemake script for rule eval_next_passage_task: the next-passage choice task from the held-out shards."""

from pathlib import Path

from nanogerman.offline_tasks import NextPassageSpec, write_next_passage_task
from nanogerman.stage import run_stage
from nanogerman.tokenizer_training import iter_texts


def main(snakemake):
    section = snakemake.params.spec
    shards = list(snakemake.input.shards)
    documents, sources = [], []
    for shard in shards:
        for row, text in enumerate(iter_texts([shard])):
            documents.append(text)
            sources.append(f"{Path(shard).stem}:{row}")
    if section["max_documents"] is not None:
        documents, sources = documents[: section["max_documents"]], sources[: section["max_documents"]]
    write_next_passage_task(
        documents,
        NextPassageSpec.from_config(section),
        snakemake.output.folder,
        sources=sources,
        provenance={
            "shards": [Path(shard).name for shard in shards],
            "shard_set": section["shards"],
            "max_documents": section["max_documents"],
        },
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
