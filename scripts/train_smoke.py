"""Snakemake script for rule train_smoke: the target's model shape on synthetic data for a few steps."""

from nanogerman.job import terminate_on_sigterm
from nanogerman.run_params import plan_from_params
from nanogerman.stage import run_stage
from nanogerman.training import smoke_run


def main(snakemake):
    terminate_on_sigterm()
    params = snakemake.params
    smoke_run(
        plan_from_params(params.plan, params.backend),
        steps=int(params.steps),
        checkpoint_dir=params.checkpoint_dir.value,
        results_dir=params.results_dir,
        out=snakemake.output.report,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
