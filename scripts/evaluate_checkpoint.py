"""Snakemake script for rule checkpoint_evaluate: bits per byte and the chosen tasks of one exported checkpoint."""

from nanogerman.checkpoint_eval import evaluate_checkpoint
from nanogerman.evaluation import ModelSpec, hub_offline_if_local, quiet_job, use_threads
from nanogerman.stage import run_stage
from nanogerman.tokenizer_training import iter_texts


def main(snakemake):
    quiet_job()
    use_threads(snakemake.threads)
    params = snakemake.params.job  # checkpoint_eval.job_params: the values this job uses
    hub_offline_if_local(
        ModelSpec(snakemake.wildcards.run, snakemake.input.model),
        hub_data=any(task not in params["local_data"] for task in params["tasks"]),
    )
    texts = list(iter_texts(list(snakemake.input.get("shards", []))))
    limit = (params["bits_per_byte"] or {}).get("max_documents")
    evaluate_checkpoint(
        run=snakemake.wildcards.run,
        step=int(snakemake.wildcards.step),
        folder=snakemake.input.model,
        params=params,
        metrics=snakemake.input.metrics,
        out=snakemake.output.results,
        texts=texts[:limit] if limit is not None else texts,
        generated=list(snakemake.input.tasks),
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
