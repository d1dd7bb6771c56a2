"""Snakemake script for rule train_run: one MaxText run (local or tpu backend), its metrics and train.json."""

import logging

from nanogerman.job import terminate_on_sigterm
from nanogerman.preemption import job_warnings
from nanogerman.stage import run_stage
from nanogerman.training import plan_run, train_run


def main(snakemake):
    terminate_on_sigterm()  # Snakemake stops jobs with SIGTERM: stop MaxText (and delete the TPU slice) too
    config = snakemake.config
    plan = plan_run(config, snakemake.wildcards.run)
    for warning in job_warnings(config, plan, snakemake.input.dataset):  # the planning warnings of this run, in its log
        logging.getLogger("nanogerman.preemption").warning("%s", warning)
    train_run(
        plan,
        dataset_manifest=snakemake.input.dataset,
        tokenizer_dir=snakemake.input.tokenizer,
        training=config["training"],
        results_dir=snakemake.params.results_dir,
        manifest_out=snakemake.output.manifest,
        metrics_out=snakemake.output.metrics,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
