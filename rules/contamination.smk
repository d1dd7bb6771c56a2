# Contamination: which evaluation documents share a word n-gram with the training corpus.
# One job per training shard (results/contamination/ngrams/<shard>.npy, hashed n-grams), one merge
# (results/contamination/corpus_ngrams.npy), one job per evaluated task (results/contamination/tasks/<task>.json)
# and a summary (results/contamination/summary.md, .csv), which the report shows per task.

from nanogerman.suites import configured_tasks as _contamination_tasks_of

from nanogerman.contamination import HASH_VERSION as _NGRAM_HASH_VERSION
from nanogerman.offline_tasks import NextPassageSpec as _NextPassageSpec

CONTAMINATION = f"{RESULTS}/contamination"


wildcard_constraints:
    task=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def contamination_enabled():
    section = config.get("evaluation") or {}
    return bool(section) and section["contamination"]["enabled"] and bool(eval_models())


def contamination_tasks():
    """Every evaluated lm-eval task and group, the generated next-passage task first."""
    section = config["evaluation"]
    generated = [_NextPassageSpec.task] if section["next_passage"]["enabled"] else []
    return list(dict.fromkeys(generated + _contamination_tasks_of(section)))


def contamination_results():
    return (
        [f"{CONTAMINATION}/tasks/{task}.json" for task in contamination_tasks()]
        if contamination_enabled()
        else []
    )


def clean_subset_results():
    """{task: its contamination result} with evaluation.contamination.clean_subsets; each model's evaluation then needs them."""
    if (
        not contamination_enabled()
        or not config["evaluation"]["contamination"]["clean_subsets"]
    ):
        return {}
    return {
        task: f"{CONTAMINATION}/tasks/{task}.json" for task in contamination_tasks()
    }


def contamination_outputs():
    if not contamination_enabled():
        return []
    return contamination_results() + [
        f"{CONTAMINATION}/summary.md",
        f"{CONTAMINATION}/summary.csv",
    ]


rule contamination_shard:
    input:
        shard=f"{RESULTS}/corpus/{{shard}}.parquet",
    output:
        ngrams=f"{CONTAMINATION}/ngrams/{{shard}}.npy",
    log:
        f"{RESULTS}/logs/contamination/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/contamination/{{shard}}.tsv"
    params:
        n=lambda wildcards: config["evaluation"]["contamination"]["n"],
        hashing=_NGRAM_HASH_VERSION,  # a new hash version recomputes the n-grams
    script:
        "../scripts/contamination_shard.py"


rule contamination_merge:
    input:
        shards=lambda wildcards: [
            f"{CONTAMINATION}/ngrams/{shard}.npy"
            for shard in shards_of(config["dataset"]["train_shards"])
        ],
    output:
        ngrams=f"{CONTAMINATION}/corpus_ngrams.npy",
        info=f"{CONTAMINATION}/corpus_ngrams.json",
    log:
        f"{RESULTS}/logs/contamination/merge.log",
    benchmark:
        f"{RESULTS}/benchmarks/contamination/merge.tsv"
    params:
        n=lambda wildcards: config["evaluation"]["contamination"]["n"],
    script:
        "../scripts/contamination_merge.py"


rule contamination_task:
    input:
        corpus=f"{CONTAMINATION}/corpus_ngrams.npy",
        tasks=lambda wildcards: (
            [NEXT_PASSAGE] if config["evaluation"]["next_passage"]["enabled"] else []
        ),
    output:
        result=f"{CONTAMINATION}/tasks/{{task}}.json",
    log:
        f"{RESULTS}/logs/contamination/task_{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/contamination/task_{{task}}.tsv"
    resources:
        downloads=lambda wildcards: int(
            wildcards.task not in config["evaluation"]["local_data"]
            and wildcards.task != _NextPassageSpec.task
        ),
    params:
        n=lambda wildcards: config["evaluation"]["contamination"]["n"],
        hashing=_NGRAM_HASH_VERSION,
        local_data=lambda wildcards: {  # this task's own local data, if any: another task's folder changes nothing here
            task: folder
            for task, folder in config["evaluation"]["local_data"].items()
            if task == wildcards.task
        },
    script:
        "../scripts/contamination_task.py"


rule contamination_summary:
    input:
        results=lambda wildcards: contamination_results(),
    output:
        markdown=f"{CONTAMINATION}/summary.md",
        csv=f"{CONTAMINATION}/summary.csv",
    log:
        f"{RESULTS}/logs/contamination/summary.log",
    localrule: True
    params:
        clean=lambda wildcards: list(clean_subset_results()),
        n=lambda wildcards: config["evaluation"]["contamination"]["n"],
    script:
        "../scripts/contamination_summary.py"
