"""Snakemake script for rule export_hf: one run's checkpoint to a Hugging Face folder, checked by logits."""

from nanogerman.evaluation import quiet_job
from nanogerman.export import export_run
from nanogerman.job import terminate_on_sigterm
from nanogerman.stage import run_stage


def main(snakemake):
    terminate_on_sigterm()  # Snakemake stops jobs with SIGTERM: stop the MaxText children too
    quiet_job()
    export_run(
        snakemake.input.manifest,
        snakemake.input.tokenizer,
        snakemake.output.folder,
        step=snakemake.params.step,
        tolerance=snakemake.params.tolerance,
        check_length=snakemake.params.check_length,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
