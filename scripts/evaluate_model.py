"""Snakemake script for rule eval_lm_eval: lm-eval on one model (generated tasks, configured tasks, local overrides)."""

from nanogerman.evaluation import EvalSettings, evaluate_lm_eval, hub_offline_if_local, model_spec_of, quiet_job, use_threads
from nanogerman.stage import run_stage


def main(snakemake):
    quiet_job()
    use_threads(snakemake.threads)
    spec = model_spec_of(snakemake.wildcards.model, snakemake.params.reference, run_folder=snakemake.input.get("model"))
    hub_offline_if_local(spec, hub_data=any(task not in snakemake.params.local_data for task in snakemake.params.tasks))
    evaluate_lm_eval(
        spec,
        EvalSettings(**snakemake.params.settings),
        snakemake.output.results,
        tasks=snakemake.params.tasks,
        generated=list(snakemake.input.tasks),
        local_data=snakemake.params.local_data,
        clean=snakemake.params.clean,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
