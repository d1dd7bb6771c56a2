"""The training jobs get their config through params: a result-changing value reruns exactly its job, a backend knob none.

Snakemake reruns a job whose recorded params changed (``--rerun-triggers params``); it records
params of builtin types only. :mod:`nanogerman.run_params` splits a run's plan accordingly. The
workflow test records the train jobs' params with ``--touch`` (nothing trains) and dry-runs changes.
"""

from __future__ import annotations

import copy
import os
import re

import yaml
from conftest import REPO, SAMPLE_DIR, dry_run_jobs, run_snakemake
from snakemake.persistence import UNREPRESENTABLE, Persistence

from nanogerman.config import validate_config
from nanogerman.provenance import file_sha256
from nanogerman.run_params import (
    BACKEND_TPU_KEYS,
    FIT_SETTINGS,
    RESULT_TPU_KEYS,
    SMOKE_SETTINGS,
    backend_param,
    checkpoint_identity,
    checkpoint_key,
    plan_from_params,
    plan_param,
    training_key,
)
from nanogerman.training import plan_run

TPU_SCENARIO = REPO / ".test" / "tpu.yaml"


def tpu_config() -> dict:
    config = yaml.safe_load(TPU_SCENARIO.read_text(encoding="utf-8"))
    config["corpus"]["location"] = str(SAMPLE_DIR)
    return config


def recorded(value) -> str:
    """What Snakemake records of a param value (Persistence._serialize_param_builtin, its own code)."""
    return Persistence._serialize_param_builtin(None, value)


def test_no_script_reads_the_workflow_config_but_fetch_shard():
    readers = sorted(path.name for path in (REPO / "scripts").glob("*.py") if "snakemake.config" in path.read_text())
    assert readers == ["fetch_shard.py"]  # its corpus.download must not refetch the shards (see its comment)


def test_every_tpu_key_is_either_result_changing_or_a_backend_knob():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text(encoding="utf-8"))
    keys = set(schema["properties"]["training"]["properties"]["tpu"]["properties"])
    assert set(RESULT_TPU_KEYS) | set(BACKEND_TPU_KEYS) == keys
    assert not set(RESULT_TPU_KEYS) & set(BACKEND_TPU_KEYS)


def test_the_plan_param_is_recorded_the_backend_param_is_not_and_together_they_give_the_plan():
    config = validate_config(tpu_config())
    plan = plan_run(config, "tiny_neox")
    assert plan_from_params(plan_param(plan), backend_param(plan)) == plan
    assert recorded(plan_param(plan)) != UNREPRESENTABLE and recorded(backend_param(plan)) == UNREPRESENTABLE
    assert plan_param(plan)["tpu"] == {key: plan.tpu[key] for key in RESULT_TPU_KEYS}
    changed = copy.deepcopy(config)
    changed["training"]["tpu"].update(poll_seconds=1, heartbeat_seconds=5, max_restarts=2, zone="us-east5-b")
    changed["training"]["runs"].reverse()  # the position in training.runs
    assert plan_param(plan_run(changed, "tiny_neox")) == plan_param(plan)
    changed["training"]["tpu"]["runtime_version"] = "v2-alpha-tpuv5"
    assert plan_param(plan_run(changed, "tiny_neox")) != plan_param(plan)
    smoke, fit = plan_param(plan, SMOKE_SETTINGS), plan_param(plan, FIT_SETTINGS)
    config["training"]["defaults"]["learning_rate"] = 0.001  # neither job reads it
    assert plan_param(plan_run(config, "tiny_neox"), SMOKE_SETTINGS) == smoke
    assert plan_param(plan_run(config, "tiny_neox"), FIT_SETTINGS) == fit


TRAIN_RULES = ("--allowed-rules", "train_run", "train_smoke", "train_fit", "train_checks")


def touched_tpu_runs(tmp_path, config: dict, *options: str) -> list[str]:
    """The scenario's training jobs recorded by --touch over stand-in inputs (nothing trains); returns the targets."""
    results = tmp_path / config["results_dir"]
    runs = [entry["name"] for entry in config["training"]["runs"]]
    folders = [results / "tokenizers" / entry["name"] for entry in config["tokenizers"]]
    files = [results / "dataset" / "dataset.json", results / "train" / "smoke" / "v6e-8-europe-west4-a.json"]
    files += [results / "train" / run / name for run in runs for name in ("fit.json", "train.json", "metrics.jsonl")]
    for folder in folders:
        folder.mkdir(parents=True)
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    validated = validate_config(config)  # the runs' checks gates (--touch does not create them)
    files += [results / "train" / run / "checks" / training_key(plan_run(validated, run)) for run in runs]
    for path in files[-len(runs) :]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    targets = [f"{config['results_dir']}/train/{run}/train.json" for run in runs]
    touched = run_snakemake(tmp_path, config, *targets, *TRAIN_RULES, *options, "--touch", "--forceall")
    assert touched.returncode == 0, touched.stderr[-2000:]
    return targets


def test_a_backend_knob_plans_no_training_and_a_learning_rate_only_its_run(tmp_path):
    """The scenario's tpu runs recorded by --touch; then poll interval and co. (nothing), the checks' settings, one run's rate."""
    config = tpu_config()
    runs = [entry["name"] for entry in config["training"]["runs"]]
    only = [*TRAIN_RULES, "--rerun-triggers", "params"]
    targets = touched_tpu_runs(tmp_path, config, "--rerun-triggers", "params")

    config["training"]["tpu"].update(poll_seconds=5, heartbeat_seconds=10, max_restarts=3, stale_minutes=60, keep=True)
    quiet = run_snakemake(tmp_path, config, *targets, *only, "-n")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Nothing to be done" in quiet.stdout + quiet.stderr

    checked = copy.deepcopy(config)
    checked["training"].update(fit={"max_fraction": 0.9}, smoke={"steps": 3})
    checks = run_snakemake(tmp_path, checked, *targets, *only, "-n")
    assert checks.returncode == 0, checks.stderr[-2000:]
    fits = sorted(f"run={run}" for run in runs)  # the checks again, but no training: a run takes its gate as ancient()
    smoke = ["target=v6e-8-europe-west4-a"]
    assert planned_jobs(checks.stdout) == {"train_fit": fits, "train_smoke": smoke, "train_checks": fits}

    shape = copy.deepcopy(config)  # a setting the checks read too: the checks and the runs, in one invocation
    shape["training"]["defaults"]["max_target_length"] = 64
    both = run_snakemake(tmp_path, shape, *targets, *only, "-n")
    assert both.returncode == 0, both.stderr[-2000:]
    assert planned_jobs(both.stdout) == {"train_fit": fits, "train_smoke": smoke, "train_checks": fits, "train_run": fits}

    config["training"]["runs"][1]["learning_rate"] = 0.002
    planned = run_snakemake(tmp_path, config, *targets, *only, "-n")
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert planned_jobs(planned.stdout) == {"train_run": [f"run={runs[1]}"], "train_checks": [f"run={runs[1]}"]}
    assert "params have changed since last execution" in planned.stdout


def planned_jobs(output: str) -> dict[str, list[str]]:
    """:func:`dry_run_jobs` without the checks gates' keys (run_params.training_key)."""
    return {
        rule: sorted(re.sub(r",? ?key=[0-9a-f]{8}", "", line) for line in lines) for rule, lines in dry_run_jobs(output).items()
    }


def wider(model_text: str) -> str:
    """The model file edited in place: a wider MLP."""
    assert "base_mlp_dim: 192" in model_text
    return model_text.replace("base_mlp_dim: 192", "base_mlp_dim: 256")


def test_an_edited_model_or_requirements_file_reruns_the_jobs_that_read_it_and_the_runs(tmp_path):
    """Both files are inputs (Snakemake's default triggers include mtime) and their content names the runs' checks
    gates (run_params.training_key): an edit plans the checks that read the file and the runs, in one invocation.

    Without the gate, Snakemake 9.15 would plan the checks only, and the runs on the next invocation: it does not
    look at a job's own reasons while the job behind one of its ancient() inputs reruns (dag.py, update_needrun).
    """
    config = tpu_config()
    model, requirements = tmp_path / "model.yml", tmp_path / "tpu-requirements.txt"
    model.write_text((REPO / config["training"]["defaults"]["model"]).read_text(encoding="utf-8"), encoding="utf-8")
    requirements.write_text("jax==0.0.1\n", encoding="utf-8")
    config["training"]["defaults"]["model"] = str(model)
    config["training"]["tpu"]["requirements"] = str(requirements)
    targets = touched_tpu_runs(tmp_path, config)
    runs = sorted(f"run={entry['name']}" for entry in config["training"]["runs"])
    smoke = ["target=v6e-8-europe-west4-a"]

    same = run_snakemake(tmp_path, config, *targets, *TRAIN_RULES, "-n")
    assert "Nothing to be done" in same.stdout + same.stderr, same.stdout[-2000:]

    before = requirements.stat()
    requirements.write_text("jax==0.0.2\n", encoding="utf-8")
    planned = run_snakemake(tmp_path, config, *targets, *TRAIN_RULES, "-n")
    assert planned.returncode == 0, planned.stderr[-2000:]
    # the fit compiles on this machine: not its file
    assert planned_jobs(planned.stdout) == {"train_smoke": smoke, "train_checks": runs, "train_run": runs}

    requirements.write_text("jax==0.0.1\n", encoding="utf-8")
    os.utime(requirements, ns=(before.st_atime_ns, before.st_mtime_ns))  # as it was: older than the outputs
    model.write_text(wider(model.read_text(encoding="utf-8")), encoding="utf-8")
    planned = run_snakemake(tmp_path, config, *targets, *TRAIN_RULES, "-n")
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert planned_jobs(planned.stdout) == {"train_smoke": smoke, "train_fit": runs, "train_checks": runs, "train_run": runs}


def test_the_checkpoint_key_follows_the_model_files_content_not_its_timestamp(tmp_path):
    config = tpu_config()
    model = tmp_path / "model.yml"
    text = (REPO / config["training"]["defaults"]["model"]).read_text(encoding="utf-8")
    model.write_text(text, encoding="utf-8")
    config["training"]["defaults"]["model"] = str(model)
    config = validate_config(config)
    key = checkpoint_key(plan_run(config, "tiny_neox"))
    model.write_text(text, encoding="utf-8")  # rewritten, the same bytes
    assert checkpoint_key(plan_run(config, "tiny_neox")) == key
    model.write_text(wider(text), encoding="utf-8")
    assert checkpoint_key(plan_run(config, "tiny_neox")) != key
    assert checkpoint_identity(plan_run(config, "tiny_neox"))["model_sha256"] == file_sha256(model)


def test_a_reference_revision_reruns_exactly_that_references_jobs(tmp_path, base_config):
    """Reference model and reference tokenizer revisions reach their jobs as params: a new revision reruns only those."""
    config = copy.deepcopy(base_config)
    config["evaluation"]["reference_models"] = [{"name": "ref_model", "path": "owner/model", "revision": "aaaa"}]
    config["tokenizer_eval"]["references"] = [{"name": "ref_tok", "path": "owner/tok", "revision": "aaaa"}]
    results = tmp_path / "results"
    for shard in range(5):
        path = results / "corpus" / f"shard_{shard:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    (results / "eval" / "tasks" / "next_passage").mkdir(parents=True)
    outputs = [
        results / "eval" / "ref_model" / "bits_per_byte.json",
        results / "eval" / "ref_model" / "lm_eval.json",
        results / "tokenizer_eval" / "ref_tok.json",
    ]
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    targets = [str(path.relative_to(tmp_path)) for path in outputs]
    only = ["--allowed-rules", "eval_bits_per_byte", "eval_lm_eval", "tokenizer_eval", "--rerun-triggers", "params"]
    touched = run_snakemake(tmp_path, config, *targets, *only, "--touch", "--forceall")
    assert touched.returncode == 0, touched.stderr[-2000:]
    same = run_snakemake(tmp_path, config, *targets, *only, "-n")
    assert "Nothing to be done" in same.stdout + same.stderr, same.stdout[-2000:]

    config["evaluation"]["reference_models"][0]["revision"] = "bbbb"
    planned = run_snakemake(tmp_path, config, *targets, *only, "-n")
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert dry_run_jobs(planned.stdout) == {"eval_bits_per_byte": ["model=ref_model"], "eval_lm_eval": ["model=ref_model"]}

    config["evaluation"]["reference_models"][0]["revision"] = "aaaa"
    config["tokenizer_eval"]["references"][0]["revision"] = "bbbb"
    planned = run_snakemake(tmp_path, config, *targets, *only, "-n")
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert dry_run_jobs(planned.stdout) == {"tokenizer_eval": ["tokenizer=ref_tok"]}
