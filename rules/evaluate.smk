# Evaluation stage: per model (exported runs and evaluation.reference_models), lm-eval on the
# configured German tasks plus the generated next-passage task (results/eval/<model>/lm_eval.json)
# and bits per byte on the held-out shards (results/eval/<model>/bits_per_byte.json), both in
# lm-eval's results shape; results/eval/summary.tsv puts them side by side.

from nanogerman.evaluation import (
    EvalSettings as _EvalSettings,
    ForwardSettings as _ForwardSettings,
    reference_entry as _reference_entry,
)
from nanogerman.evaluation_config import (
    evaluated_models as _evaluated_models,
    reference_names as _reference_names,
)
from nanogerman.suites import configured_tasks as _configured_tasks

EVAL = f"{RESULTS}/eval"
NEXT_PASSAGE = f"{EVAL}/tasks/next_passage"


wildcard_constraints:
    model=r"[a-z0-9][a-z0-9_.-]*",


def eval_models():
    return _evaluated_models(config)


def _eval_section(key):
    section = config["evaluation"][key]
    return section if section["enabled"] else None


def eval_files(model):
    files = []
    if _configured_tasks(config["evaluation"]) or _eval_section("next_passage"):
        files.append(f"{EVAL}/{model}/lm_eval.json")
    if _eval_section("bits_per_byte"):
        files.append(f"{EVAL}/{model}/bits_per_byte.json")
    return files


def eval_results():
    """{model: [results files]} in lm-eval's results shape (read by the report)."""
    return {model: eval_files(model) for model in eval_models()}


def eval_outputs():
    if not eval_models():
        return []
    return [path for paths in eval_results().values() for path in paths] + [
        f"{EVAL}/summary.tsv"
    ]


def _model_input(wildcards):
    """An exported run's folder; nothing for reference models (loaded from the Hub or their own folder)."""
    return (
        {}
        if wildcards.model in _reference_names(config)
        else {"model": export_dir(wildcards.model)}
    )


rule eval_next_passage_task:
    input:
        shards=lambda wildcards: [
            f"{RESULTS}/corpus/{shard}.parquet"
            for shard in shards_of(config["evaluation"]["next_passage"]["shards"])
        ],
    output:
        folder=directory(NEXT_PASSAGE),
    log:
        f"{RESULTS}/logs/eval/next_passage_task.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/next_passage_task.tsv"
    params:
        spec=_without(config["evaluation"]["next_passage"], "enabled"),  # each value that shapes the task
    script:
        "../scripts/make_offline_task.py"


rule eval_lm_eval:
    input:
        unpack(_model_input),
        tasks=[NEXT_PASSAGE] if config["evaluation"]["next_passage"]["enabled"] else [],
        contamination=lambda wildcards: list(clean_subset_results().values()),
    output:
        results=f"{EVAL}/{{model}}/lm_eval.json",
    log:
        f"{RESULTS}/logs/eval/{{model}}_lm_eval.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/{{model}}_lm_eval.tsv"
    threads: config["evaluation"]["threads"]
    resources:
        downloads=lambda wildcards: int(
            wildcards.model in _reference_names(config)
            or bool(_configured_tasks(config["evaluation"]))
        ),
    params:
        settings=_EvalSettings.from_config(config["evaluation"]).as_param(),  # a dict: a changed setting reruns the job
        reference=lambda wildcards: _reference_entry(config, wildcards.model),  # its revision too
        tasks=_configured_tasks(config["evaluation"]),
        local_data=config["evaluation"]["local_data"],
        clean=lambda wildcards: clean_subset_results(),  # {task: contamination result}: also run <task>_clean
    script:
        "../scripts/evaluate_model.py"


rule eval_bits_per_byte:
    input:
        unpack(_model_input),
        shards=lambda wildcards: [
            f"{RESULTS}/corpus/{shard}.parquet"
            for shard in shards_of(config["evaluation"]["bits_per_byte"]["shards"])
        ],
    output:
        results=f"{EVAL}/{{model}}/bits_per_byte.json",
    log:
        f"{RESULTS}/logs/eval/{{model}}_bits_per_byte.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/{{model}}_bits_per_byte.tsv"
    threads: config["evaluation"]["threads"]
    resources:
        downloads=lambda wildcards: int(wildcards.model in _reference_names(config)),
    params:
        # only what a forward pass reads: lm-eval's limit, seed, few-shot and bootstrap do not change bits per byte
        settings=_ForwardSettings.from_config(config["evaluation"]).as_param(),
        reference=lambda wildcards: _reference_entry(config, wildcards.model),  # its revision too
        section=_without(config["evaluation"]["bits_per_byte"], "enabled"),
    script:
        "../scripts/evaluate_bits_per_byte.py"


rule eval_summary:
    input:
        results=lambda wildcards: [
            path for paths in eval_results().values() for path in paths
        ],
    output:
        table=f"{EVAL}/summary.tsv",
    log:
        f"{RESULTS}/logs/eval/summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/summary.tsv"
    localrule: True
    params:
        results=lambda wildcards: eval_results(),
    script:
        "../scripts/summarize_evaluation.py"
