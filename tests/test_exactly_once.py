"""Exactly-once data after a preemption, on CPU: a run killed after a checkpoint and resumed.

One tiny run per dataset format goes through the training stage's own job code
(:func:`nanogerman.training.train_run`, in a child process, as the train_run rule runs
it). The first attempt is killed with SIGKILL a few steps after its step-10 checkpoint,
like a preempted TPU VM; the second attempt resumes from that checkpoint. Until the kill
the first attempt *is* the uninterrupted run with the same seed, so the steps both
attempts trained (11 up to the kill) compare the resumed run with the uninterrupted one,
step for step, without a third MaxText start:

* Grain over ArrayRecord (``dataset.format: array_record``) keeps its iterator state in
  the checkpoint: the resumed losses equal the uninterrupted ones exactly (CPU, float32,
  one device: the same batch gives bit-identical losses).
* MaxText's tfds pipeline (``dataset.format: tfrecord``) starts again from the first
  example: the resumed losses differ from the uninterrupted ones, which is what the
  planning warning for spot runs on tfrecord says.

Losses are read from the raw per-step records MaxText writes (``metrics_file``), split
into the two attempts, and compared by step number.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SAMPLE_DIR
from tiny_model import tiny_run

from nanogerman.preemption import train_flops_per_step
from nanogerman.training import committed_steps, read_jsonl

STEPS = 30
PERIOD = 10  # checkpoints at steps 0, 10, 20 and 29
KILL_AFTER = 14  # the first attempt is killed once MaxText reports this step: after the step-10 checkpoint, before step 20's
COMPLETED = re.compile(r"completed step: (\d+),")
RESTORED = re.compile(r"restoring from this run's directory step (\d+)")
JOB = Path(__file__).with_name("train_job.py")


def run_config() -> dict:
    """A tiny run: the 2-layer model, 8 x 256 tokens per step (about 0.1-0.2 s a step here, so the kill lands between checkpoints)."""
    return {
        "training": {
            "backend": "local",
            "local": {"hardware": "cpu", "devices": 1},
            "defaults": tiny_run(STEPS, PERIOD, per_device_batch_size=8, max_target_length=256, packing=True, seed=0),
            "runs": [{"name": "once", "tokenizer": "tok"}],
        },
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A 512-token tokenizer and the sample as a dataset in both formats, built by the dataset stage's code."""
    from nanogerman.dataset import assemble_dataset, write_part
    from nanogerman.tokenizer_training import TokenizerSpec, train_tokenizer

    root = tmp_path_factory.mktemp("exactly_once")
    shards = [SAMPLE_DIR / f"shard_0000{index}.parquet" for index in range(5)]
    tokenizer = root / "tokenizer"
    train_tokenizer(TokenizerSpec.from_schema(name="tok", kind="nanochat", vocab_size=512), shards[:4], tokenizer)
    datasets = {}
    for file_format in ("array_record", "tfrecord"):
        folder = root / file_format
        parts = {"train": [], "validation": []}
        for index, shard in enumerate(shards):
            part = folder / "parts" / shard.stem
            write_part(shard, part, file_format=file_format, files_per_shard=2)
            parts["validation" if index == 4 else "train"].append(part)
        assemble_dataset(parts, folder / "tfds", folder / "dataset.json", file_format=file_format)
        datasets[file_format] = folder / "dataset.json"
    return {"root": root, "tokenizer": tokenizer, "datasets": datasets}


def killed_and_resumed(inputs: dict, file_format: str) -> dict:
    """Train, SIGKILL the job (its whole process group) after step KILL_AFTER, run it again; both attempts' records."""
    results = inputs["root"] / "runs" / file_format
    spec = results / "spec.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(
        json.dumps(
            {
                "config": run_config(),
                "run": "once",
                "dataset": str(inputs["datasets"][file_format]),
                "tokenizer": str(inputs["tokenizer"]),
                "results": str(results),
            }
        )
    )
    command = [sys.executable, str(JOB), str(spec)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO, start_new_session=True
    )
    first_log = []
    try:
        assert first.stdout is not None
        for line in first.stdout:
            first_log.append(line)
            match = COMPLETED.search(line)
            if match and int(match.group(1)) >= KILL_AFTER:
                break
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended before step KILL_AFTER: the checks below say so
            pass
        first.wait()
    first_seconds = time.monotonic() - started
    (raw,) = results.glob("checkpoints/once-*/metrics.raw.jsonl")
    checkpoints = raw.parent / "checkpoints"
    killed_after = committed_steps(checkpoints)
    first_records = read_jsonl(raw)
    started = time.monotonic()
    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    second_seconds = time.monotonic() - started
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    records = read_jsonl(raw)
    restored = RESTORED.search(second.stdout)
    return {
        "tflops_per_step": first_records[0].get("perf/per_device_tflops") if first_records else None,  # one device
        "first": {record["step"]: record["learning/loss"] for record in first_records},
        "second": {record["step"]: record["learning/loss"] for record in records[len(first_records) :]},
        "killed_after_checkpoints": killed_after,
        "restored_from": int(restored.group(1)) if restored else None,
        "checkpoint_dir": checkpoints,
        "manifest": json.loads((results / "train" / "once" / "train.json").read_text()),
        "first_log": "".join(first_log),
        "seconds": (round(first_seconds, 1), round(second_seconds, 1)),
    }


@pytest.fixture(scope="module")
def grain(inputs) -> dict:
    return killed_and_resumed(inputs, "array_record")


@pytest.fixture(scope="module")
def tfds(inputs) -> dict:
    return killed_and_resumed(inputs, "tfrecord")


def overlap(run: dict) -> list[int]:
    """Steps after the restored checkpoint that both attempts trained: where resumed meets uninterrupted."""
    steps = sorted(step for step in run["first"] if step > run["restored_from"] and step in run["second"])
    assert steps, f"the kill landed before any step after checkpoint {run['restored_from']} was recorded: {sorted(run['first'])}"
    return steps


def check_killed_between_checkpoints(run: dict) -> None:
    assert run["killed_after_checkpoints"] == [0, PERIOD], (run["killed_after_checkpoints"], run["first_log"][-3000:])
    assert run["restored_from"] == PERIOD, "the second attempt did not resume from the step-10 checkpoint"
    assert min(run["second"]) == PERIOD + 1 and max(run["second"]) == STEPS - 1
    assert run["manifest"]["final_step"] == STEPS - 1 and run["manifest"]["resumed_from_step"] == PERIOD


@pytest.mark.slow
def test_grain_over_array_record_resumes_with_the_same_batches(grain):
    check_killed_between_checkpoints(grain)
    assert grain["manifest"]["dataset"]["maxtext"]["dataset_type"] == "grain"
    steps = overlap(grain)
    # Exact: on CPU, float32, one device, the same weights and the same batch give bit-identical losses.
    assert [grain["second"][step] for step in steps] == [grain["first"][step] for step in steps], steps
    # the iterator's position is part of the checkpoint
    assert (grain["checkpoint_dir"] / str(PERIOD) / "iter").is_dir()


@pytest.mark.slow
def test_tfds_resume_starts_the_data_again(tfds):
    check_killed_between_checkpoints(tfds)
    assert tfds["manifest"]["dataset"]["maxtext"]["dataset_type"] == "tfds"
    steps = overlap(tfds)
    differences = [abs(tfds["second"][step] - tfds["first"][step]) for step in steps]
    # the resumed run trains on the first batches again, not on the uninterrupted run's batches 11, 12, …
    assert min(differences) > 1e-4, dict(zip(steps, differences, strict=False))
    assert not (tfds["checkpoint_dir"] / str(PERIOD) / "iter").exists()  # nothing in the checkpoint says where the data was


@pytest.mark.slow
def test_the_cadence_checks_flops_count_is_maxtexts(grain):
    """The checkpoint cadence estimate counts a step's FLOPs as MaxText does (its perf/per_device_tflops, one device here)."""
    settings = run_config()["training"]["defaults"]
    model = yaml.safe_load((REPO / settings["model"]).read_text(encoding="utf-8"))
    flops = train_flops_per_step(
        {**model, **settings["extra"]},
        vocab_size=512,
        max_target_length=settings["max_target_length"],
        global_batch_size=settings["per_device_batch_size"],
    )
    assert grain["tflops_per_step"] == pytest.approx(flops / 1e12, rel=1e-9)
