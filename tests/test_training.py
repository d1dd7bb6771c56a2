"""Training stage: planning and MaxText arguments (fast), and real tiny MaxText runs on CPU through the rule (slow).

The slow tests train once per module (a tiny model, 60 steps, through snakemake) and
reuse it: loss falls, a checkpoint is written, train.json and metrics.jsonl are
filled. A second run is killed mid-training (the whole snakemake process group,
SIGKILL) and rerun: it must resume from the last checkpoint, not from step 0.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import signal
import subprocess
import time
import types
from pathlib import Path

import pytest
from conftest import REPO, VENV_BIN, default_config, run_snakemake, set_key, snakemake_command, stub_run_inputs

from nanogerman import tpu_worker, training
from nanogerman.config import ConfigError, validate_config
from nanogerman.job import LineTail, committed_steps, config_hash, maxtext_train_args, padded_vocab
from nanogerman.metrics import dedupe_steps, parse_step_line, read_jsonl, summarize_metrics
from nanogerman.resume import recorded_through
from nanogerman.schema import schema_defaults
from nanogerman.training import (
    TrainingError,
    accelerator_devices,
    batch_geometry,
    merged_settings,
    parse_memory_analysis,
    parse_oom,
    plan_run,
)

TINY = str(REPO / "config" / "models" / "nano-german-tiny.yml")


def config_with(change=None) -> dict:
    config = default_config()
    if change:
        change(config)
    return config


# --- planning ----------------------------------------------------------------------------


def test_default_config_plans_two_tiny_cpu_runs():
    config = validate_config(default_config())
    plans = training.plan_runs(config)
    assert [(plan.name, plan.tokenizer) for plan in plans] == [("tiny_nanochat", "sample_nanochat"), ("tiny_neox", "sample_neox")]
    for plan in plans:
        assert plan.backend == "local" and plan.hardware == "cpu" and plan.target == "local"
        assert plan.global_batch_size == plan.per_device_batch_size == 8
        assert plan.settings["max_target_length"] == 128 and plan.model_path == TINY


def test_settings_layers_run_over_defaults_over_builtins():
    training_section = {
        "defaults": {"learning_rate": 1e-3, "steps": 10, "global_batch_size": 64, "extra": {"a": 1, "b": 2}},
    }
    entry = {"name": "r", "tokenizer": "t", "steps": 20, "per_device_batch_size": 4, "extra": {"b": 3}}
    settings = merged_settings(training_section, entry)
    assert settings["learning_rate"] == 1e-3 and settings["steps"] == 20
    assert settings["per_device_batch_size"] == 4 and settings["global_batch_size"] is None  # the run sized the batch itself
    assert settings["extra"] == {"a": 1, "b": 3}
    assert settings["packing"] is True and settings["vocab_multiple"] == 128  # built-in defaults


@pytest.mark.parametrize(
    "settings, devices, expected",
    [
        ({"global_batch_size": 1024, "gradient_accumulation_steps": 4}, 8, (32, 4, 1024)),  # the seed's v6e-8 run
        ({"global_batch_size": 1024, "gradient_accumulation_steps": 2}, 16, (32, 2, 1024)),  # the seed's v4-32 runs
        ({"per_device_batch_size": 8, "gradient_accumulation_steps": 1}, 1, (8, 1, 8)),
        ({"per_device_batch_size": 8, "global_batch_size": 16, "gradient_accumulation_steps": 2}, 1, (8, 2, 16)),
    ],
)
def test_batch_geometry(settings, devices, expected):
    assert batch_geometry(settings, devices, "training.runs[0]") == expected


def test_batch_geometry_errors_are_one_line():
    with pytest.raises(TrainingError, match=r"^config error: training.runs\[0\].per_device_batch_size 4 disagrees"):
        batch_geometry(
            {"per_device_batch_size": 4, "global_batch_size": 16, "gradient_accumulation_steps": 1}, 1, "training.runs[0]"
        )
    with pytest.raises(TrainingError, match="sets neither global_batch_size nor per_device_batch_size"):
        batch_geometry({"gradient_accumulation_steps": 1}, 1, "training.runs[0]")


@pytest.mark.parametrize(
    "name", ["v4-8", "v4-32", "v5p-8", "v5p-128", "v6e-1", "v6e-8", "v6e-256", "v5litepod-16", "v5litepod-4"]
)
def test_device_counts_match_maxtext(name):
    from maxtext.utils.accelerator_to_spec_map import get_system_characteristics

    assert accelerator_devices(name) == get_system_characteristics(training.maxtext_topology(name)).devices_per_slice


def test_vocab_is_rounded_up_to_the_multiple():
    assert padded_vocab(2048, 128) == 2048 and padded_vocab(1990, 128) == 2048 and padded_vocab(65536, 128) == 65536
    assert padded_vocab(50257, 128) == 50304


MALFORMED_TRAINING = [
    (
        "unknown tokenizer",
        set_key(["training", "runs", 0, "tokenizer"], "sample_bpe"),
        "config error: training.runs[0].tokenizer is 'sample_bpe'; expected the name of an entry in tokenizers (sample_nanochat, sample_neox)",
    ),
    (
        "batch not divisible",
        lambda c: c["training"]["defaults"].update(
            global_batch_size=10, per_device_batch_size=None, gradient_accumulation_steps=4
        ),
        "config error: training.runs[0].global_batch_size 10 is not divisible by devices x gradient_accumulation_steps = 1 x 4 = 4; "
        "change global_batch_size or gradient_accumulation_steps",
    ),
    (
        "zero learning rate",
        set_key(["training", "defaults", "learning_rate"], 0),
        "config error: training.defaults.learning_rate is 0: 0 is less than or equal to the minimum of 0 (expected the peak learning rate (a finite number > 0 and < 1))",
    ),
    (
        "negative learning rate in a run",
        set_key(["training", "runs", 1, "learning_rate"], -1e-3),
        "config error: training.runs[1].learning_rate is -0.001: -0.001 is less than or equal to the minimum of 0 (expected the peak learning rate (a finite number > 0 and < 1))",
    ),
    (
        "nan learning rate",
        set_key(["training", "defaults", "learning_rate"], float("nan")),
        "config error: training.defaults.learning_rate is nan; expected a number",
    ),
    (
        "infinite learning rate",
        set_key(["training", "defaults", "learning_rate"], float("inf")),
        "config error: training.defaults.learning_rate is inf: inf is greater than or equal to the maximum of 1",
    ),
    (
        "huge learning rate in a run",
        set_key(["training", "runs", 0, "learning_rate"], 1e9),
        "config error: training.runs[0].learning_rate is 1000000000.0: 1000000000.0 is greater than or equal to the maximum of 1",
    ),
    (
        "a trillion steps",
        set_key(["training", "defaults", "steps"], 10**12),
        "config error: training.defaults.steps is 1000000000000: 1000000000000 is greater than the maximum of 10000000",
    ),
    (
        "huge per-device batch",
        set_key(["training", "defaults", "per_device_batch_size"], 10**6),
        "config error: training.defaults.per_device_batch_size is 1000000: 1000000 is greater than the maximum of 65536",
    ),
    (
        "huge global batch",
        lambda c: c["training"]["runs"][1].update(global_batch_size=2**21),
        "config error: training.runs[1].global_batch_size is 2097152: 2097152 is greater than the maximum of 1048576",
    ),
    (
        "huge context",
        set_key(["training", "defaults", "max_target_length"], 2**21),
        "config error: training.defaults.max_target_length is 2097152: 2097152 is greater than the maximum of 1048576",
    ),
    (
        "extra sets steps",
        set_key(["training", "runs", 0, "extra"], {"steps": 5}),
        "config error: training.runs[0].extra.steps is a setting the workflow makes itself; use steps instead",
    ),
    (
        "extra sets a path",
        set_key(["training", "defaults", "extra"], {"base_output_directory": "/tmp/x"}),
        "config error: training.defaults.extra.base_output_directory is a setting the workflow makes itself; use training.checkpoint_dir instead",
    ),
    (
        "extra interpolates",
        set_key(["training", "defaults", "extra"], {"run_note": "${oc.env:HF_TOKEN}"}),
        "config error: training.defaults.extra.run_note is '${oc.env:HF_TOKEN}': '${' would be read as an interpolation",
    ),
    (
        "misspelled setting",
        set_key(["training", "runs", 0, "learning_rat"], 1e-3),
        "config error: unknown key training.runs[0].learning_rat; allowed keys here:",
    ),
    (
        "duplicate run",
        lambda c: c["training"]["runs"].append(dict(c["training"]["runs"][0])),
        "config error: training.runs[2].name 'tiny_nanochat' is used twice; names must be unique",
    ),
    (
        "no steps",
        lambda c: c["training"]["defaults"].pop("steps"),
        "config error: training.runs[0] (tiny_nanochat) has no steps; set it there or in training.defaults",
    ),
    (
        "missing model file",
        set_key(["training", "defaults", "model"], "config/models/nope.yml"),
        "config error: training.runs[0] (tiny_nanochat): model file 'config/models/nope.yml' not found",
    ),
    (
        "bad accelerator",
        set_key(["training", "tpu"], {"accelerator_type": "v9-8"}),
        "config error: training.tpu.accelerator_type is 'v9-8'; expected the Cloud TPU type",
    ),
]


@pytest.mark.parametrize("label, change, expected", MALFORMED_TRAINING, ids=[case[0] for case in MALFORMED_TRAINING])
def test_training_config_errors_are_one_clear_line(label, change, expected):
    with pytest.raises(ConfigError) as caught:
        validate_config(config_with(change))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(expected), message


def test_a_bad_run_stops_snakemake_before_any_job_with_one_line(tmp_path, base_config):
    base_config["training"]["runs"][0]["tokenizer"] = "sample_bpe"
    result = run_snakemake(tmp_path, base_config, "-n")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("config error: training.runs[0].tokenizer is 'sample_bpe'")
    assert "Traceback" not in result.stderr


# --- MaxText arguments and metrics ---------------------------------------------------------


def test_maxtext_arguments_for_a_cpu_run():
    plan = plan_run(validate_config(default_config()), "tiny_neox")
    data = {"dataset_type": "tfds", "dataset_path": "/d", "dataset_name": "n:1.0.0", "train_split": "train", "eval_split": None}
    args = maxtext_train_args(
        plan,
        model_path=TINY,
        run_name="tiny_neox-0123abcd",
        base_output_directory="/ckpt",
        tokenizer_path="/tok",
        vocab_size=2048,
        data=data,
        metrics_file="/m.jsonl",
    )
    assert args[0] == TINY
    pairs = dict(arg.split("=", 1) for arg in args[1:])
    assert len(pairs) == len(args) - 1  # no key twice
    assert pairs["hardware"] == "cpu" and pairs["skip_jax_distributed_system"] == "true"
    assert pairs["tokenizer_type"] == "huggingface" and pairs["tokenizer_path"] == "/tok" and pairs["vocab_size"] == "2048"
    assert pairs["dataset_type"] == "tfds" and pairs["dataset_name"] == "n:1.0.0" and "eval_split" not in pairs
    assert pairs["steps"] == "300" and pairs["learning_rate"] == "0.003" and pairs["per_device_batch_size"] == "8"
    assert pairs["packing"] == "true" and pairs["checkpoint_period"] == "150" and pairs["metrics_file"] == "/m.jsonl"
    assert pairs["num_epoch"] == "10" and pairs["dtype"] == "float32" and pairs["eval_interval"] == "50"
    assert pairs["grain_worker_count"] == "0" and pairs["grain_worker_count_eval"] == "0"


def test_config_hash_follows_the_weights_not_the_bookkeeping():
    base = ["m.yml", "run_name=a", "learning_rate=0.001", "checkpoint_period=10", "base_output_directory=/x"]
    common = {"model_text": "m", "tokenizer_sha256": "t", "dataset_checksums": {"f": "1"}, "global_batch_size": 8}
    reference = config_hash(base, **common)
    assert config_hash([*base[:3], "checkpoint_period=99", "base_output_directory=gs://y"], **common) == reference
    assert config_hash([*base[:2], "learning_rate=0.002", *base[3:]], **common) != reference
    assert config_hash(base, **{**common, "tokenizer_sha256": "u"}) != reference
    assert config_hash(base, **{**common, "dataset_checksums": {"f": "2"}}) != reference


def test_metrics_keep_the_last_record_of_each_step(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [
        {"step": 0.0, "learning/loss": 8.0},
        {"step": 1.0, "learning/loss": 7.0},
        {"step": 2.0, "learning/loss": 6.9},
        {"step": 2.0, "learning/loss": 6.5},
        {"step": 3.0, "learning/loss": 6.0},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 4.0, "learning/lo')  # killed mid-write
    records = dedupe_steps(read_jsonl(path))
    assert [record["step"] for record in records] == [0, 1, 2, 3]
    assert records[2]["learning/loss"] == 6.5


def test_step_lines_parse():
    line = (
        "I1128 22:20:44.304325 140571120454528 metric_logger.py:265] completed step: 39, seconds: 0.115, "
        "TFLOP/s/device: 0.013, Tokens/s/device: 8928.883, total_weights: 1024, loss: 5.920, lm_loss: 5.920, perplexity: 372.348"
    )
    assert parse_step_line(line) == {
        "step": 39,
        "learning/loss": 5.92,
        "learning/total_weights": 1024.0,
        "perf/step_time_seconds": 0.115,
        "perf/per_device_tokens_per_sec": 8928.883,
    }
    assert parse_step_line("completed step: 3, seconds: 1.000, total_weights: 16, loss: nan, lm_loss: 0")["learning/loss"] != 0
    assert parse_step_line("Config param steps: 40") is None


def test_summary_figures():
    records = [
        {"step": i, "learning/loss": 8.0 - i, "learning/total_weights": 100.0, "perf/step_time_seconds": 10.0 if i == 0 else 0.5}
        for i in range(6)
    ]
    summary = summarize_metrics(records, tokens_per_step=128)
    assert summary["first_loss"] == 8.0 and summary["final_loss"] == 3.0 and summary["min_loss"] == 3.0
    assert summary["tokens_seen"] == 600 and summary["tokens_processed"] == 768 and summary["last_step"] == 5
    assert summary["tokens_per_second"] == pytest.approx(200.0)  # the compile step is left out


def test_only_finished_checkpoints_count(tmp_path):
    for name in ("0", "50", "100"):
        (tmp_path / name / "items").mkdir(parents=True)
        (tmp_path / name / "_CHECKPOINT_METADATA").write_text("{}")
    (tmp_path / "150.orbax-checkpoint-tmp-1711" / "items").mkdir(parents=True)
    (tmp_path / "200" / "items").mkdir(parents=True)  # no metadata: unfinished
    assert committed_steps(tmp_path) == [0, 50, 100]
    assert committed_steps(tmp_path / "missing") == []


def test_memory_analysis_and_out_of_memory_messages():
    printed = (
        "Memory analysis: CompiledMemoryStats(generated_code_size_in_bytes=1048576, argument_size_in_bytes=2147483648, "
        "output_size_in_bytes=2147483648, alias_size_in_bytes=2147483648, temp_size_in_bytes=1073741824, host_temp_size_in_bytes=0)"
    )
    memory = parse_memory_analysis(printed)
    assert memory["per_chip_bytes"] == 3 * 2**30 + 2**20
    assert parse_oom(
        "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
        "Used 41.25G of 31.25G hbm. Exceeded hbm capacity by 10.00G."
    ) == (41.25, 31.25)
    assert parse_oom(
        "jax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: Ran out of memory on HBM, the total "
        "memory required for HLO temporaries (153.07G) exceeds available HBM (31.24G). HLO module: jit_train_step."
    ) == (153.07, 31.24)
    assert parse_oom("all fine") is None


# --- real MaxText runs on CPU (slow) -----------------------------------------------------------


def tiny_training_config() -> dict:
    """The default config cut to one tokenizer and one tiny run of 80 steps, checkpointed every 20."""
    config = default_config()
    config["corpus"]["location"] = str(REPO / "resources" / "german_sample")
    config["tokenizers"] = [entry for entry in config["tokenizers"] if entry["name"] == "sample_neox"]
    config.pop("tokenizer_eval", None)
    config["training"]["smoke"] = {"enabled": False}  # the smoke job runs (and is checked) in test_workflow.py
    config["dataset"]["format"] = "tfrecord"  # MaxText's tfds pipeline (the default's Grain one runs in test_workflow.py)
    config["training"]["defaults"].update(steps=80, checkpoint_period=20, eval_interval=30, eval_steps=2)
    config["training"]["runs"] = [{"name": "tiny", "tokenizer": "sample_neox"}]
    config["evaluation"]["checkpoints"]["every"] = None  # the default's 150 is no multiple of this run's checkpoint_period
    return config


TARGET = "results/train/tiny/train.json"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny run through snakemake, killed mid-training and run again; reused by the tests below.

    The first snakemake (the training) is killed with its whole process
    group (SIGKILL: snakemake, the job script and MaxText, like a machine going down)
    once a checkpoint at step >= 20 is on disk; the rerun must resume from it.
    """
    workdir = tmp_path_factory.mktemp("train")
    config = tiny_training_config()
    snakemake = snakemake_command(workdir, config)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(
        [snakemake[0], TARGET, *snakemake[1:], "--cores", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    checkpoints = None
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and process.poll() is None:
            found = list((workdir / "results" / "checkpoints").glob("tiny-*/checkpoints"))
            if found and committed_steps(found[0]) and committed_steps(found[0])[-1] >= 20:
                checkpoints = found[0]
                break
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert checkpoints is not None, "no checkpoint at step 20 within 400 s"
    killed_at = committed_steps(checkpoints)[-1]
    recorded = [record["step"] for record in read_jsonl(checkpoints.parent / "metrics.raw.jsonl")]
    manifest_after_kill = (workdir / TARGET).exists()
    committed_after_kill = committed_steps(checkpoints)
    subprocess.run([*snakemake, "--unlock"], env=env, capture_output=True, check=True)
    result = run_snakemake(workdir, config, TARGET)
    assert result.returncode == 0, result.stderr[-4000:]
    return {
        "workdir": workdir,
        "config": config,
        "killed_at": killed_at,
        "manifest_after_kill": manifest_after_kill,
        # MaxText logs a step's metrics after saving its checkpoint: a checkpoint past the last recorded step is retrained
        "resume_at": max([step for step in committed_after_kill if step <= recorded_through(recorded)], default=None),
        "manifest": json.loads((workdir / TARGET).read_text()),
        "records": [
            json.loads(line) for line in (workdir / "results" / "train" / "tiny" / "metrics.jsonl").read_text().splitlines()
        ],
        "log": (workdir / "results" / "logs" / "train" / "tiny.log").read_text(),
    }


@pytest.mark.slow
def test_tiny_run_loss_falls_and_metrics_are_written(trained):
    manifest, records = trained["manifest"], trained["records"]
    assert [record["step"] for record in records] == list(range(80))  # steps of the killed attempt kept
    losses = [record["learning/loss"] for record in records]
    assert losses[0] > 7.0  # about ln(2048) = 7.6 for an untrained model
    assert sum(losses[-10:]) / 10 < losses[0] - 2.0, losses
    assert manifest["first_loss"] == losses[0] and manifest["final_loss"] == losses[-1]
    assert manifest["tokens_seen"] == sum(record["learning/total_weights"] for record in records)
    # validation loss (tfds eval split, 2 batches) after steps 0, 30 and 60, across the kill and the resumed attempt
    evaluated = [
        (record["step"], record["eval/avg_loss"], record["eval/total_weights"]) for record in records if "eval/avg_loss" in record
    ]
    assert [step for step, _, _ in evaluated] == [0, 30, 60], evaluated
    assert all(weights > 0 for _, _, weights in evaluated) and evaluated[-1][1] < evaluated[0][1] - 0.5, evaluated
    assert manifest["final_step"] == 79 and manifest["steps"] == 80
    assert "completed step: 79" in trained["log"]  # MaxText's output is in the rule's log


@pytest.mark.slow
def test_tiny_run_checkpoint_and_manifest_for_the_export_stage(trained):
    workdir, manifest = trained["workdir"], trained["manifest"]
    checkpoint_dir = Path(manifest["checkpoint_dir"])
    assert checkpoint_dir == workdir / "results" / "checkpoints" / manifest["run_name"] / "checkpoints"
    assert committed_steps(checkpoint_dir)[-1] == 79 and {0, 20}.issubset(committed_steps(checkpoint_dir))
    assert manifest["checkpoint_step"] == 79
    assert (
        manifest["checkpoint_uri"] == f"{checkpoint_dir}/79/items" and (checkpoint_dir / "79" / "items" / "_METADATA").is_file()
    )
    stats = json.loads((workdir / "results" / "tokenizers" / "sample_neox" / "stats.json").read_text())
    assert manifest["tokenizer"]["vocab_size"] == stats["vocab_size"]
    assert manifest["vocab_size"] == padded_vocab(stats["vocab_size"], 128)
    assert manifest["tokenizer"]["eos_token_id"] == stats["eos_token_id"]
    assert manifest["run_name"] == f"tiny-{manifest['config_hash'][:8]}"
    assert manifest["versions"]["maxtext"] == "0.2.5"
    assert manifest["dataset"]["maxtext"]["dataset_type"] == "tfds"
    assert manifest["model"]["config"] == TINY and f"vocab_size={manifest['vocab_size']}" in manifest["maxtext_args"]
    again = run_snakemake(workdir, trained["config"], "-n", TARGET)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(trained):
    killed_at, resume_at, manifest, log = trained["killed_at"], trained["resume_at"], trained["manifest"], trained["log"]
    assert 20 <= killed_at < 79 and not trained["manifest_after_kill"]
    assert resume_at is not None and resume_at in (killed_at, killed_at - 20)  # at most one checkpoint period again
    assert manifest["resumed_from_step"] == resume_at
    assert f"restoring from this run's directory step {resume_at}" in log
    steps = [int(line.split("completed step: ")[1].split(",")[0]) for line in log.splitlines() if "completed step: " in line]
    assert steps[0] == resume_at + 1 and steps[-1] == 79  # continued, not from step 0


def test_a_forced_rerun_of_a_finished_run_does_not_start_maxtext(tmp_path, monkeypatch):
    """MaxText refuses to start when the last step is saved; the job then just rewrites its outputs."""
    config = validate_config(default_config())
    plan = plan_run(config, "tiny_neox")
    tokenizer, dataset = stub_run_inputs(tmp_path)
    inputs = training.RunInputs.load(dataset, tokenizer, plan.model_path)
    context = training.prepare_job(
        plan, inputs, base_output_directory=str((tmp_path / "checkpoints").resolve()), results_dir=tmp_path
    )
    last = int(plan.settings["steps"]) - 1  # the default's final step
    for step in (0, last):
        (Path(context.checkpoint_dir) / str(step) / "items").mkdir(parents=True)
        (Path(context.checkpoint_dir) / str(step) / "_CHECKPOINT_METADATA").write_text("{}")
    context.raw_metrics.write_text(
        "".join(
            json.dumps({"step": step, "learning/loss": 8.0 - step / 50, "perf/step_time_seconds": 0.25}) + "\n"
            for step in range(last + 1)
        )
    )
    monkeypatch.setattr(training, "run_streaming", lambda *args, **kwargs: pytest.fail("MaxText was started"))
    manifest = training.train_run(
        plan,
        dataset_manifest=dataset,
        tokenizer_dir=tokenizer,
        checkpoint_dir=config["training"]["checkpoint_dir"],
        results_dir=tmp_path,
        manifest_out=tmp_path / "out" / "train.json",
        metrics_out=tmp_path / "out" / "metrics.jsonl",
    )
    assert (
        manifest["checkpoint_step"] == last
        and manifest["final_step"] == last
        and manifest["backend_details"] == {"already_complete": True}
    )
    assert manifest["run_name"] == context.run_name
    # the killed job's training time (MaxText's step times), not this job's
    assert manifest["wall_seconds"] == pytest.approx(0.25 * (last + 1))


@pytest.mark.slow
def test_fit_check_fails_early_with_the_per_chip_memory(tmp_path):
    """train_compile for a v6e-8 on this CPU: the tiny model with 8,192 sequences of 2,048 tokens per chip cannot fit."""
    config = config_with(
        lambda c: (
            c["dataset"].update(publish_to="gs://data/tfds"),
            c["training"].update(
                backend="tpu",
                checkpoint_dir="gs://ckpt/runs",
                tpu={"project": "p", "zone": "europe-west4-a", "accelerator_type": "v6e-8", "runtime_version": "v2-alpha-tpuv6e"},
            ),
        )
    )
    config["training"]["defaults"].update(per_device_batch_size=8192, max_target_length=2048)
    plan = plan_run(validate_config(config), "tiny_neox")
    tokenizer, _ = stub_run_inputs(tmp_path)
    with pytest.raises(TrainingError) as caught:
        training.fit_check(plan, tokenizer_dir=tokenizer, out=tmp_path / "fit.json", fit=schema_defaults("training", "fit"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("run tiny_neox does not fit v6e-8: the train step needs ")
    match = re.search(r"needs ([0-9.]+) GiB per chip, a chip has ([0-9.]+) GiB; lower per_device_batch_size", message)
    assert match and float(match[1]) > float(match[2]) > 30  # a v6e chip has 32 GB of HBM
    assert not (tmp_path / "fit.json").exists()


def maxtext_save_message(step: int, async_checkpointing: bool) -> str:
    """The line MaxText's checkpointing.print_save_message logs, from its installed source (importing it takes ~10 s)."""
    source = Path(importlib.util.find_spec("maxtext.common.checkpointing").origin).read_text(encoding="utf-8")
    (function,) = [node for node in ast.parse(source).body if getattr(node, "name", None) == "print_save_message"]
    logged: list[str] = []
    namespace = {"max_logging": types.SimpleNamespace(log=logged.append)}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "checkpointing.py", "exec"), namespace)
    namespace["print_save_message"](step, async_checkpointing)
    (line,) = logged
    return line


@pytest.mark.parametrize("async_checkpointing", [False, True])
def test_maxtexts_save_line_gives_the_checkpoint_step_with_either_checkpointing(async_checkpointing):
    """MaxText's own save message (synchronous, or the start of an asynchronous save) names the step for both readers."""
    line = maxtext_save_message(40, async_checkpointing)
    assert ("asynchronous" in line) == async_checkpointing
    tail = LineTail()
    tail(f"I1130 10:24:01.728832 1 checkpointing.py:598] {line}")
    assert tail.checkpoint_step == 40
    assert int(tpu_worker.CHECKPOINT.search(line).group(1)) == 40
