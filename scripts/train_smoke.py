"""Snakemake script for rule train_smoke: the target's model shape on synthetic data for a few steps."""

from nanogerman.job import terminate_on_sigterm
from nanogerman.stage import run_stage
from nanogerman.training import smoke_plans, smoke_run


def main(snakemake):
    terminate_on_sigterm()
    config = snakemake.config
    smoke_run(
        smoke_plans(config)[snakemake.wildcards.target],
        training=config["training"],
        results_dir=snakemake.params.results_dir,
        out=snakemake.output.report,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
