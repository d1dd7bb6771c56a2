"""Snakemake script for rule train_run: one MaxText run (local or tpu backend), its metrics and train.json."""

from nanogerman.stage import run_stage
from nanogerman.job import terminate_on_sigterm
from nanogerman.training import plan_run, train_run


def main(snakemake):
    terminate_on_sigterm()  # Snakemake stops jobs with SIGTERM: stop MaxText (and delete the TPU slice) too
    config = snakemake.config
    train_run(
        plan_run(config, snakemake.wildcards.run),
        dataset_manifest=snakemake.input.dataset,
        tokenizer_dir=snakemake.input.tokenizer,
        training=config["training"],
        results_dir=snakemake.params.results_dir,
        manifest_out=snakemake.output.manifest,
        metrics_out=snakemake.output.metrics,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
