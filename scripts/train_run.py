"""Snakemake script for rule train_run: one MaxText run (local or tpu backend), its metrics and train.json."""

import logging

from nanogerman.job import terminate_on_sigterm
from nanogerman.preemption import job_warnings
from nanogerman.run_params import plan_from_params
from nanogerman.stage import run_stage
from nanogerman.training import train_run


def main(snakemake):
    terminate_on_sigterm()  # Snakemake stops jobs with SIGTERM: stop MaxText (and delete the TPU slice) too
    params = snakemake.params
    plan = plan_from_params(params.plan, params.backend)
    # the planning warnings of this run, in its log
    for warning in job_warnings(plan, snakemake.input.dataset, vocab_size=params.vocab_size, results_dir=params.results_dir):
        logging.getLogger("nanogerman.preemption").warning("%s", warning)
    train_run(
        plan,
        dataset_manifest=snakemake.input.dataset,
        tokenizer_dir=snakemake.input.tokenizer,
        checkpoint_dir=params.checkpoint_dir,
        results_dir=params.results_dir,
        manifest_out=snakemake.output.manifest,
        metrics_out=snakemake.output.metrics,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
