# Evaluation of intermediate checkpoints (evaluation.checkpoints): per (run, step) one export with the
# logits check (results/checkpoint_eval/<run>/<key>/step_<step>/hf/, deleted once evaluated unless
# keep_exports) and one evaluation job (<key>/step_<step>.json: bits per byte and the chosen tasks, tokens
# seen); per run curves.csv (a row per run, step and metric) and curves.svg|png against tokens seen.
# The final checkpoint's figures are the export and evaluation stages' own. The training manifest is
# an ancient() input: a run trained further does not redo the checkpoints already evaluated.

import sys as _sys

from nanogerman.checkpoint_eval import (
    check_checkpoint_evaluation as _check_checkpoint_evaluation,
    intermediate_steps as _intermediate_steps,
    intermediate_tasks as _intermediate_tasks,
    job_params as _checkpoint_job_params,
)
from nanogerman.config import ConfigError as _ConfigError
from nanogerman.run_params import checkpoint_key as _checkpoint_key

CHECKPOINT_EVAL = f"{RESULTS}/checkpoint_eval"

try:
    _check_checkpoint_evaluation(
        config, [run for run in eval_models() if run in train_runs()]
    )
except _ConfigError as error:
    _sys.stderr.write(f"{error}\n")
    _sys.exit(1)


wildcard_constraints:
    step=r"\d+",
    key=r"[0-9a-f]{8}",


def checkpoint_eval_runs():
    """Evaluated training runs with intermediate checkpoints to evaluate."""
    return [
        run
        for run in eval_models()
        if run in train_runs() and _intermediate_steps(config, run)
    ]


def checkpoint_folder(run):
    """results/checkpoint_eval/<run>/<key>: key hashes the run's settings but its length (run_params.checkpoint_key),
    so a changed learning rate evaluates its checkpoints anew and a run trained further keeps the earlier ones.
    """
    return f"{CHECKPOINT_EVAL}/{run}/{_checkpoint_key(train_plan(run))}"


def checkpoint_points(run):
    return [
        f"{checkpoint_folder(run)}/step_{step}.json"
        for step in _intermediate_steps(config, run)
    ]


def checkpoint_curves(run):
    return {
        "csv": f"{CHECKPOINT_EVAL}/{run}/curves.csv",
        "plot": f"{CHECKPOINT_EVAL}/{run}/curves.svg",
    }


def checkpoint_outputs():
    return [
        path
        for run in checkpoint_eval_runs()
        for path in checkpoint_curves(run).values()
    ]


def _checkpoint_export_folder():
    folder = directory(f"{CHECKPOINT_EVAL}/{{run}}/{{key}}/step_{{step}}/hf")
    return (
        folder if config["evaluation"]["checkpoints"]["keep_exports"] else temp(folder)
    )


rule checkpoint_export:
    input:
        manifest=lambda wildcards: ancient(train_manifest(wildcards.run)),
        tokenizer=lambda wildcards: tokenizer_dir(train_plan(wildcards.run).tokenizer),
    output:
        folder=_checkpoint_export_folder(),
    log:
        f"{RESULTS}/logs/checkpoint_eval/{{run}}_{{key}}_step_{{step}}_export.log",
    benchmark:
        f"{RESULTS}/benchmarks/checkpoint_eval/{{run}}_{{key}}_step_{{step}}_export.tsv"
    threads: 1  # one process: MaxText's converter, then its forward pass (nanogerman.maxtext_export)
    params:
        step=lambda wildcards: int(wildcards.step),
        tolerance=config["export"]["tolerance"],
        check_length=config["export"]["check_length"],
    script:
        "../scripts/export_run.py"


def _checkpoint_eval_inputs(wildcards):
    bpb, tasks, next_passage = _intermediate_tasks(config)
    inputs = {
        "model": f"{CHECKPOINT_EVAL}/{wildcards.run}/{wildcards.key}/step_{wildcards.step}/hf",
        "metrics": ancient(f"{RESULTS}/train/{wildcards.run}/metrics.jsonl"),
        "tasks": [NEXT_PASSAGE] if next_passage else [],
    }
    if bpb:
        inputs["shards"] = [
            f"{RESULTS}/corpus/{shard}.parquet"
            for shard in shards_of(config["evaluation"]["bits_per_byte"]["shards"])
        ]
    return inputs


rule checkpoint_evaluate:
    input:
        unpack(_checkpoint_eval_inputs),
    output:
        results=f"{CHECKPOINT_EVAL}/{{run}}/{{key}}/step_{{step}}.json",
    log:
        f"{RESULTS}/logs/checkpoint_eval/{{run}}_{{key}}_step_{{step}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/checkpoint_eval/{{run}}_{{key}}_step_{{step}}.tsv"
    threads: config["evaluation"]["threads"]
    params:
        job=lambda wildcards: _checkpoint_job_params(config),  # only the values the job uses: a change reruns it
    script:
        "../scripts/evaluate_checkpoint.py"


rule checkpoint_curves:
    input:
        points=lambda wildcards: checkpoint_points(wildcards.run),
        final=lambda wildcards: eval_files(wildcards.run),
        manifest=lambda wildcards: train_manifest(wildcards.run),
    output:
        csv=report(
            f"{CHECKPOINT_EVAL}/{{run}}/curves.csv",
            category="3. Plots",
            subcategory="Checkpoints",
            caption="../report/checkpoint_curves.rst",
        ),
        plot=report(
            f"{CHECKPOINT_EVAL}/{{run}}/curves.svg",
            category="3. Plots",
            subcategory="Checkpoints",
            caption="../report/checkpoint_curves.rst",
        ),
        png=f"{CHECKPOINT_EVAL}/{{run}}/curves.png",
    log:
        f"{RESULTS}/logs/checkpoint_eval/{{run}}_curves.log",
    localrule: True
    params:
        chance=REPORT_SETTINGS.chance,
    script:
        "../scripts/checkpoint_curves.py"
