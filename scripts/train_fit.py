"""Snakemake script for rule train_fit: compile a tpu run for its topology here and check it fits in HBM."""

from nanogerman.job import terminate_on_sigterm
from nanogerman.stage import run_stage
from nanogerman.training import fit_check, plan_run


def main(snakemake):
    terminate_on_sigterm()
    config = snakemake.config
    fit_check(
        plan_run(config, snakemake.wildcards.run),
        tokenizer_dir=snakemake.input.tokenizer,
        out=snakemake.output.report,
        fit=config["training"]["fit"],
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
