# Training stage: one MaxText job per entry of training.runs, writing results/train/<run>/train.json
# (final step, checkpoint URI, loss, tokens, versions) and metrics.jsonl. Checkpoints are not
# outputs: they stay in <checkpoint_dir>/<run_name>/checkpoints/ so a rerun resumes from them.
# Before the runs of a backend target, a smoke job trains the model shape on synthetic data;
# tpu runs are first compiled for their topology on this CPU (fit job). tpu jobs hold the
# resource tpu_pod (profiles/tpu allows one at a time). Each job gets its settings as params
# (nanogerman/run_params.py): a result-changing one reruns it, a tpu backend knob reruns nothing,
# and a check run again for its own settings (smoke.steps, fit.*) retrains nothing. The model file and
# (tpu) the workers' requirements file are inputs: an edited one reruns the jobs that read it. Snakemake
# 9.15 skips a job's own reasons while the job behind an ancient() input of it reruns, so a run waits
# for its checks through a gate named by what reruns it (rule train_checks): a change that reruns a
# check and the run plans both (config/README.md, "What a change reruns").

from nanogerman.preemption import tokenizer_vocab_size as _tokenizer_vocab_size
from nanogerman.run_params import (
    FIT_SETTINGS as _FIT_SETTINGS,
    SMOKE_SETTINGS as _SMOKE_SETTINGS,
    Unrecorded as _Unrecorded,
    backend_param as _backend_param,
    plan_param as _plan_param,
    requirements_input as _requirements_input,
    training_key as _training_key,
)
from nanogerman.training import (
    plan_run as _plan_run,
    plan_runs as _plan_runs,
    run_names as _run_names,
    smoke_plans as _smoke_plans,
)


wildcard_constraints:
    run=r"[a-z0-9][a-z0-9_.-]*",
    target=r"[a-z0-9][a-z0-9-]*",


# A plain number on purpose: with a function here, Snakemake 9.15 stopped counting the jobs' threads.
TPU_POD = int(config["training"]["backend"] == "tpu")


def train_runs():
    return _run_names(config)


def train_plan(name):
    return _plan_run(config, name)


def train_manifest(name):
    """results/train/<run>/train.json: what the export stage reads (checkpoint_uri, checkpoint_step, tokenizer)."""
    return f"{RESULTS}/train/{name}/train.json"


def train_outputs():
    return [train_manifest(name) for name in train_runs()]


def smoke_report(target):
    return f"{RESULTS}/train/smoke/{target}.json"


def fit_report(name):
    return f"{RESULTS}/train/{name}/fit.json"


def _fit_enabled(plan):
    return plan.backend == "tpu" and config["training"]["fit"]["enabled"]


def _check_reports(plan):
    """The smoke and fit reports a run waits for."""
    checks = {}
    if config["training"]["smoke"]["enabled"]:
        checks["smoke"] = smoke_report(plan.target)
    if _fit_enabled(plan):
        checks["fit"] = fit_report(plan.name)
    return checks


def train_checks(name):
    """results/train/<run>/checks/<key>: the run's checks passed, key naming what reruns its training (training_key)."""
    return f"{RESULTS}/train/{name}/checks/{_training_key(train_plan(name))}"


def _run_checks(wildcards):
    """The run's checks gate; ancient(): a check run again (its own settings changed) retrains nothing, and a
    run with a new key waits for a new gate, which also makes Snakemake plan it (run_params.training_key).
    """
    plan = train_plan(wildcards.run)
    return {"checks": ancient(train_checks(plan.name))} if _check_reports(plan) else {}


def _smoke_inputs(wildcards):
    plan = _smoke_plans(config)[wildcards.target]
    fits = [
        fit_report(other.name)
        for other in _plan_runs(config)
        if other.target == wildcards.target and _fit_enabled(other)
    ]
    return {
        "model": plan.model_path,
        "fits": fits,
        "requirements": _requirements_input(plan),
    }


rule train_fit:
    input:
        tokenizer=lambda wildcards: tokenizer_dir(train_plan(wildcards.run).tokenizer),
        model=lambda wildcards: train_plan(wildcards.run).model_path,
    output:
        report=f"{RESULTS}/train/{{run}}/fit.json",
    log:
        f"{RESULTS}/logs/train/{{run}}_fit.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run}}_fit.tsv"
    threads: config["training"]["local"]["threads"]
    params:
        plan=lambda wildcards: _plan_param(train_plan(wildcards.run), _FIT_SETTINGS),
        backend=lambda wildcards: _backend_param(train_plan(wildcards.run)),
        fit={key: config["training"]["fit"][key] for key in ("hbm_gib", "max_fraction")},
    script:
        "../scripts/train_fit.py"


rule train_smoke:
    input:
        unpack(_smoke_inputs),
    output:
        report=f"{RESULTS}/train/smoke/{{target}}.json",
    log:
        f"{RESULTS}/logs/train/smoke_{{target}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/smoke_{{target}}.tsv"
    threads: config["training"]["local"]["threads"]
    resources:
        tpu_pod=TPU_POD,
    params:
        results_dir=lambda wildcards, output: str(Path(output.report).parents[2]),
        plan=lambda wildcards: _plan_param(
            _smoke_plans(config)[wildcards.target], _SMOKE_SETTINGS
        ),
        backend=lambda wildcards: _backend_param(_smoke_plans(config)[wildcards.target]),
        steps=config["training"]["smoke"]["steps"],
        # where the throwaway checkpoints go: the report does not name it, so a change reruns nothing
        checkpoint_dir=_Unrecorded(config["training"]["checkpoint_dir"]),
    script:
        "../scripts/train_smoke.py"


rule train_checks:
    input:
        unpack(lambda wildcards: _check_reports(train_plan(wildcards.run))),
    output:
        touch(f"{RESULTS}/train/{{run}}/checks/{{key}}"),
    log:
        f"{RESULTS}/logs/train/{{run}}_checks_{{key}}.log",
    wildcard_constraints:
        key=r"[0-9a-f]{8}",
    localrule: True
    run:
        with open(log[0], "w", encoding="utf-8") as handle:
            handle.write("".join(f"passed: {path}\n" for path in input))


rule train_run:
    input:
        unpack(_run_checks),
        dataset=dataset_manifest(),
        tokenizer=lambda wildcards: tokenizer_dir(train_plan(wildcards.run).tokenizer),
        model=lambda wildcards: train_plan(wildcards.run).model_path,
        # tpu: the workers' pinned packages, so an edited file reruns the run (its path is in the plan param)
        requirements=lambda wildcards: _requirements_input(train_plan(wildcards.run)),
    output:
        manifest=f"{RESULTS}/train/{{run}}/train.json",
        metrics=f"{RESULTS}/train/{{run}}/metrics.jsonl",
    log:
        f"{RESULTS}/logs/train/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run}}.tsv"
    threads: config["training"]["local"]["threads"]  # a tpu job uses them only to stream the workers' output
    resources:
        tpu_pod=TPU_POD,
    params:
        results_dir=lambda wildcards, output: str(Path(output.manifest).parents[2]),
        # the resolved run (settings, batch geometry, backend, the result-changing tpu keys): a change reruns the job
        plan=lambda wildcards: _plan_param(train_plan(wildcards.run)),
        # how the tpu backend drives the job (poll interval, heartbeat, retries, zone, …): a change reruns nothing
        backend=lambda wildcards: _backend_param(train_plan(wildcards.run)),
        checkpoint_dir=config["training"]["checkpoint_dir"],  # train.json names the checkpoint
        # for the job log's spot warnings only; a new vocabulary size retrains the tokenizer, which reruns the job anyway
        vocab_size=lambda wildcards: _tokenizer_vocab_size(
            config, train_plan(wildcards.run)
        ),
    script:
        "../scripts/train_run.py"
