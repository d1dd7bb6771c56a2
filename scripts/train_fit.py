"""Snakemake script for rule train_fit: compile a tpu run for its topology here and check it fits in HBM."""

from nanogerman.job import terminate_on_sigterm
from nanogerman.run_params import plan_from_params
from nanogerman.stage import run_stage
from nanogerman.training import fit_check


def main(snakemake):
    terminate_on_sigterm()
    params = snakemake.params
    fit_check(
        plan_from_params(params.plan, params.backend),
        tokenizer_dir=snakemake.input.tokenizer,
        out=snakemake.output.report,
        fit=params.fit,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
