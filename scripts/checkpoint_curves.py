"""Snakemake script for rule checkpoint_curves: one run's evaluated checkpoints as a CSV and a chart."""

from nanogerman.checkpoint_eval import write_run_curves
from nanogerman.stage import run_stage


def main(snakemake):
    write_run_curves(
        run=snakemake.wildcards.run,
        points=list(snakemake.input.points),
        final=list(snakemake.input.final),
        manifest=snakemake.input.manifest,
        chance=snakemake.params.chance,
        csv_out=snakemake.output.csv,
        plot_out=snakemake.output.plot,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
