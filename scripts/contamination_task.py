"""Snakemake script for rule contamination_task: the share of one task's documents that share an n-gram with the corpus."""

from nanogerman.contamination import task_contamination, task_documents
from nanogerman.evaluation import quiet_job
from nanogerman.stage import run_stage


def main(snakemake):
    quiet_job()
    task = snakemake.wildcards.task
    documents = task_documents(task, generated=list(snakemake.input.tasks), local_data=snakemake.params.local_data)
    task_contamination(task, documents, snakemake.input.corpus, snakemake.output.result, n=snakemake.params.n)


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
