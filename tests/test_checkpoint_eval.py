"""Evaluation of intermediate checkpoints: which steps, one-line errors for steps a run never saves, and the plan.

The plan test runs rules/checkpoints.smk on its own (the other stages are stand-ins over files
already in results/): a run trained further evaluates only its new checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from conftest import REPO, VENV_BIN, default_config, dry_run_jobs

from nanogerman.checkpoint_eval import curve_flags, intermediate_steps, intermediate_tasks, result_rows, saved_steps, tokens_seen
from nanogerman.config import ConfigError, validate_config
from nanogerman.run_params import checkpoint_key
from nanogerman.training import plan_run


def config_with(train_steps=300, period=150, **checkpoints) -> dict:
    config = default_config()
    config["training"]["defaults"].update(steps=train_steps, checkpoint_period=period)
    config["evaluation"]["checkpoints"] = checkpoints
    return validate_config(config)


def test_the_default_evaluates_three_checkpoints_per_run():
    config = validate_config(default_config())
    for run in ("tiny_nanochat", "tiny_neox"):
        assert intermediate_steps(config, run) == [0, 150]  # and the final step 299, the export stage's own
    assert intermediate_tasks(config) == (True, [], True)


def test_steps_every_and_explicit_lists():
    assert saved_steps(300, 150) == [0, 150, 299] and saved_steps(1000, 300) == [0, 300, 600, 900, 999]
    assert intermediate_steps(config_with(train_steps=1000, period=100, every=300), "tiny_neox") == [0, 300, 600, 900]
    assert intermediate_steps(config_with(train_steps=1000, period=100, steps=[200, 999]), "tiny_neox") == [200]
    assert intermediate_steps(config_with(), "tiny_neox") == []  # final only


@pytest.mark.parametrize(
    "checkpoints, expected",
    [
        (
            {"steps": [120]},
            "config error: evaluation.checkpoints.steps has 120, a step run tiny_nanochat never saves; "
            "its checkpoints: 0, 150, 299",
        ),
        (
            {"every": 200},
            "config error: evaluation.checkpoints.every is 200, not a multiple of run tiny_nanochat's "
            "checkpoint_period 150; use 150",
        ),
        ({"every": 400}, "use 450"),
        (
            {"every": 150, "tasks": ["arc_de"]},
            "evaluation.checkpoints.tasks[0] is 'arc_de'; expected one of the evaluation's tasks (heldout_bpb, next_passage_de)",
        ),
    ],
)
def test_bad_checkpoint_choices_are_one_line(checkpoints, expected):
    config = config_with(**checkpoints)
    with pytest.raises(ConfigError) as error:
        intermediate_steps(config, "tiny_nanochat")
        intermediate_tasks(config)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_rows_carry_tokens_seen_and_the_reference_lines():
    records = [{"step": step, "learning/loss": 8.0 - step, "learning/total_weights": 100.0 + step} for step in range(4)]
    assert tokens_seen(records, 0) == 100 and tokens_seen(records, 2) == 303
    bpb = {
        "results": {"heldout_bpb": {"bits_per_byte,none": 3.9, "bits_per_byte_stderr,none": "N/A", "uniform_bits_per_byte": 3.7}},
        "nanogerman": {"step": 0, "tokens_seen": 100},
    }
    first = result_rows("r", 0, 100, bpb, "a.json", {"next_passage_de": 0.25})
    assert first == [
        {
            "run": "r",
            "step": 0,
            "tokens_seen": 100,
            "task": "heldout_bpb",
            "metric": "bits_per_byte",
            "value": 3.9,
            "stderr": None,
            "reference": 3.7,
            "reference_kind": "uniform",
            "source": "a.json",
        }
    ]
    later = result_rows(
        "r", 3, 406, {"results": {"heldout_bpb": {"bits_per_byte,none": 3.95, "uniform_bits_per_byte": 3.7}}}, "b", {}
    )
    assert curve_flags(first + later) == ["no improvement in held-out bits per byte (3.900 → 3.950)"]
    better = result_rows("r", 3, 406, {"results": {"heldout_bpb": {"bits_per_byte,none": 3.0}}}, "b", {})
    assert curve_flags(first + better) == []
    task = result_rows(
        "r", 0, 1, {"results": {"next_passage_de": {"acc,none": 0.3, "acc_stderr,none": 0.02}}}, "c", {"next_passage_de": 0.25}
    )
    assert task[0]["reference"] == 0.25 and task[0]["reference_kind"] == "chance" and task[0]["stderr"] == 0.02


STANDALONE = """
configfile: "config.yaml"
RESULTS = "results"
NEXT_PASSAGE = f"{{RESULTS}}/eval/tasks/next_passage"

from nanogerman.report_flags import ReportSettings
from nanogerman.training import plan_run

REPORT_SETTINGS = ReportSettings.from_config(config)

def train_runs():
    return ["tiny_neox"]

def eval_models():
    return ["tiny_neox"]

def train_plan(name):
    return plan_run(config, name)

def train_manifest(name):
    return f"{{RESULTS}}/train/{{name}}/train.json"

def tokenizer_dir(name):
    return f"{{RESULTS}}/tokenizers/{{name}}"

def eval_files(model):
    return [f"{{RESULTS}}/eval/{{model}}/bits_per_byte.json"]

def shards_of(name):
    return ["shard_00004"]

include: "{rules}"

rule all:
    default_target: True
    input: checkpoint_outputs()

rule train_stand_in:
    output: manifest="results/train/{{run}}/train.json", metrics="results/train/{{run}}/metrics.jsonl"
    params: steps=config["training"]["defaults"]["steps"]
    shell: "echo '{{{{}}}}' > {{output.manifest}}; echo > {{output.metrics}}"
"""


def planned_jobs(workdir) -> dict[str, int]:
    command = [str(VENV_BIN / "snakemake"), "-n", "-s", str(workdir / "Snakefile"), "--directory", str(workdir), "--cores", "1"]
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {rule: len(jobs) for rule, jobs in dry_run_jobs(result.stdout).items()}


def test_a_run_trained_further_evaluates_only_its_new_checkpoint(tmp_path):
    config = default_config()
    config["training"]["runs"] = [{"name": "tiny_neox", "tokenizer": "sample_neox"}]
    (tmp_path / "Snakefile").write_text(STANDALONE.format(rules=REPO / "rules" / "checkpoints.smk"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(validate_config(config)))
    results = tmp_path / "results"
    for folder in ("tokenizers/sample_neox", "eval/tasks/next_passage"):
        (results / folder).mkdir(parents=True)
    for path in ("corpus/shard_00004.parquet", "eval/tiny_neox/bits_per_byte.json"):
        (results / path).parent.mkdir(parents=True, exist_ok=True)
        (results / path).write_text("{}")
    # the run trained to 300 steps through its (stand-in) rule, its checkpoints 0 and 150 evaluated
    command = [
        str(VENV_BIN / "snakemake"),
        "-s",
        str(tmp_path / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--cores",
        "1",
        "results/train/tiny_neox/train.json",
    ]
    trained = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"},
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    folder = results / "checkpoint_eval" / "tiny_neox" / checkpoint_key(plan_run(validate_config(config), "tiny_neox"))
    for step in (0, 150):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"step_{step}.json").write_text(json.dumps({"nanogerman": {"step": step}}))
    assert planned_jobs(tmp_path) == {"all": 1, "checkpoint_curves": 1}

    config["training"]["defaults"]["steps"] = 450  # trained further: checkpoints 0, 150, 300 and the final 449
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(validate_config(config)))
    jobs = planned_jobs(tmp_path)
    assert jobs["train_stand_in"] == 1
    assert jobs["checkpoint_export"] == 1 and jobs["checkpoint_evaluate"] == 1, jobs  # step 300 only
