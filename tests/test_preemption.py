"""Preemption checks: the dataset format spot runs get, the replay warning and the checkpoint cadence bound (fast).

The CPU runs that show why (a killed run resumed on Grain and on tfds) are in tests/test_exactly_once.py.
"""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO, snakemake_at_root

from nanogerman.config import validate_config
from nanogerman.preemption import (
    cadence_warning,
    estimate_step_seconds,
    job_warnings,
    model_dims,
    planning_warnings,
    tokenizer_vocab_size,
    train_flops_per_step,
)
from nanogerman.run_params import backend_param, plan_param
from nanogerman.training import plan_run

SEED = REPO / "config" / "nano-german.yaml"
SLM = yaml.safe_load((REPO / "config" / "models" / "nano-german-slm.yml").read_text(encoding="utf-8"))


def seed_config(**changes) -> dict:
    """The seed's config on the tpu backend (what --profile profiles/tpu selects), with top-level sections changed."""
    config = yaml.safe_load(SEED.read_text(encoding="utf-8"))
    config["training"]["backend"] = "tpu"
    for path, value in changes.items():
        target = config
        *parents, last = path.split("__")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return validate_config(config)


# --- data order ----------------------------------------------------------------------------


def test_auto_format_is_array_record_for_spot_slices_and_tfrecord_otherwise():
    assert seed_config()["dataset"]["format"] == "array_record"
    on_demand = seed_config(training__tpu__provisioning="on-demand")
    assert on_demand["dataset"]["format"] == "tfrecord"  # a run's own tpu sets no provisioning in the seed
    config = yaml.safe_load(SEED.read_text(encoding="utf-8"))
    config["training"]["tpu"]["provisioning"] = "on-demand"
    config["training"]["runs"][0]["tpu"]["provisioning"] = "spot"
    assert validate_config(config)["dataset"]["format"] == "array_record"  # one spot run is enough
    config["training"]["backend"] = "local"  # the backend does not change the dataset (no rebuild between profiles)
    assert validate_config(config)["dataset"]["format"] == "array_record"
    assert seed_config(dataset__format="tfrecord")["dataset"]["format"] == "tfrecord"  # an explicit choice stays


def test_the_embedded_default_reads_array_record_and_warns_about_nothing():
    """The embedded default sets array_record itself (Grain splits long documents instead of cutting them)."""
    config = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8")))
    assert config["dataset"]["format"] == "array_record" and planning_warnings(config) == []


def test_spot_runs_on_tfrecord_get_one_line_that_says_what_happens_and_how_to_switch():
    warnings = planning_warnings(seed_config(dataset__format="tfrecord"))
    replay = [line for line in warnings if "first example" in line]
    assert len(replay) == 1 and "\n" not in replay[0]
    names = [entry["name"] for entry in yaml.safe_load(SEED.read_text())["training"]["runs"]]
    assert all(name in replay[0] for name in names)
    assert "restarts its data from the first example" in replay[0] and "set dataset.format: array_record" in replay[0]
    # on-demand runs are not preempted: no warning
    assert not any(
        "first example" in line
        for line in planning_warnings(
            seed_config(
                dataset__format="tfrecord",
                training__tpu__provisioning="on-demand",
                training__runs=[
                    {**entry, "tpu": {key: value for key, value in entry.get("tpu", {}).items() if key != "provisioning"}}
                    for entry in yaml.safe_load(SEED.read_text())["training"]["runs"]
                ],
            )
        )
    )


def test_the_job_log_warning_follows_the_dataset_the_job_reads(tmp_path):
    config = seed_config()
    plan = plan_run(config, "nano_neox_lr6e-4")
    manifest = tmp_path / "dataset.json"
    manifest.write_text(json.dumps({"maxtext": {"dataset_type": "tfds", "dataset_path": "gs://b/tfds"}}))
    where = {"vocab_size": tokenizer_vocab_size(config, plan), "results_dir": config["results_dir"]}
    assert [line for line in job_warnings(plan, manifest, **where) if "first example" in line]
    manifest.write_text(json.dumps({"maxtext": {"dataset_type": "grain", "grain_train_files": "gs://b/x-*"}}))
    assert job_warnings(plan, manifest, **where) == []
    assert job_warnings(plan, tmp_path / "missing.json", **where) == []  # the job itself stops on it with one line


# --- checkpoint cadence --------------------------------------------------------------------


def seed_step_seconds(accelerator: str, devices: int, mfu: float) -> float:
    """The seed's step (125M-class model, 65,536-token vocabulary, 1,024 x 2,048 tokens) on a slice, estimated."""
    flops = train_flops_per_step(SLM, vocab_size=65536, max_target_length=2048, global_batch_size=1024)
    return estimate_step_seconds(flops, accelerator, devices, mfu)


def test_the_seeds_checkpoint_period_loses_hours_on_a_v4_32():
    flops = train_flops_per_step(SLM, vocab_size=65536, max_target_length=2048, global_batch_size=1024)
    weights = 12 * (768 * 64 * (2 * 12 + 2 * 4) + 768 * 2048 * 3) + 768 * 65536  # ~135 M matmul weights
    assert 6 * weights * 1024 * 2048 < flops < 1.2 * 6 * weights * 1024 * 2048  # 6 N D plus a little attention
    for mfu in (0.3, 0.5):  # a plausible range for a small model
        seconds = seed_step_seconds("v4-32", 16, mfu)
        line = cadence_warning(
            "nano_neox_lr6e-6", checkpoint_period=10000, step_seconds=seconds, max_lost_minutes=30, source="estimated"
        )
        assert line is not None and " h," in line  # hours between checkpoints
        assert f"{seconds:.3g} s per step" in line and "10000 steps" in line and "max_lost_minutes = 30 min" in line
        fitting = int(line.rsplit("at most ", 1)[1])
        assert fitting * seconds <= 30 * 60 < (fitting + 1) * seconds
        assert cadence_warning("x", checkpoint_period=fitting, step_seconds=seconds, max_lost_minutes=30, source="s") is None


def test_the_bound_is_inclusive_and_scales_with_the_step_time():
    assert (
        cadence_warning("r", checkpoint_period=100, step_seconds=18.0, max_lost_minutes=30, source="s") is None
    )  # exactly 30 min
    assert cadence_warning("r", checkpoint_period=101, step_seconds=18.0, max_lost_minutes=30, source="s") is not None
    assert cadence_warning("r", checkpoint_period=100, step_seconds=18.0, max_lost_minutes=29, source="s") is not None


def test_planning_catches_the_seeds_period_and_passes_the_shipped_one():
    seed = seed_config(training__defaults__checkpoint_period=10000)
    lines = [line for line in planning_warnings(seed) if "checkpoints every" in line]
    assert len(lines) == 6 and all("10000 steps" in line and "estimated" in line for line in lines)
    v6e = next(line for line in lines if "nano_nanochat_lr6e-6" in line)
    assert "on v6e-8 at 30% of its bf16 peak" in v6e
    shipped = seed_config()
    assert shipped["training"]["defaults"]["checkpoint_period"] < 10000 and planning_warnings(shipped) == []


def test_a_configured_or_measured_step_time_wins_over_the_estimate(tmp_path):
    configured = seed_config(training__tpu__step_seconds=5.0)
    lines = planning_warnings(configured)  # 1,000 steps x 5 s = 83 min
    assert len(lines) == 6 and all("x 5 s per step (training.tpu.step_seconds) = 83 min" in line for line in lines)
    measured = seed_config(results_dir=str(tmp_path))
    metrics = tmp_path / "train" / "nano_neox_lr6e-4" / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    # steps 0 and 1 compile (slow) and are left out; the median of the rest is 4 s
    metrics.write_text(
        "".join(
            json.dumps({"step": step, "perf/step_time_seconds": seconds}) + "\n"
            for step, seconds in enumerate([300.0, 60.0, 3.0, 4.0, 5.0])
        )
    )
    earlier = metrics.with_name("train.json")
    earlier.write_text(json.dumps({"accelerator": "cpu"}))
    assert planning_warnings(measured) == []  # a CPU trial of the run says nothing about its slice
    earlier.write_text(json.dumps({"accelerator": "v4-32"}))
    (line,) = planning_warnings(measured)
    assert line.startswith("run nano_neox_lr6e-4 checkpoints every 1000 steps x 4 s per step (measured by an earlier run)")


def test_model_dims_take_the_runs_extra_over_the_model_file():
    config = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8")))
    plan = plan_run(config, config["training"]["runs"][0]["name"])
    plan.settings["extra"] = {"base_emb_dim": 32}
    dims = model_dims(plan)
    assert dims["base_emb_dim"] == 32 and dims["base_num_decoder_layers"] == 2


@pytest.mark.parametrize("seed_as_shipped", [True, False])
def test_the_dry_run_prints_the_warnings_before_any_job(tmp_path, seed_as_shipped):
    """From the repository root with the tpu profile, as a user types it; the second case has the seed's own tfrecord and 10,000."""
    config_file = SEED
    if not seed_as_shipped:
        config = yaml.safe_load(SEED.read_text(encoding="utf-8"))
        config["dataset"]["format"] = "tfrecord"
        config["training"]["defaults"]["checkpoint_period"] = 10000
        config["evaluation"]["checkpoints"]["every"] = 10000  # evaluated checkpoints must be saved ones
        config_file = tmp_path / "seed-as-published.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result = snakemake_at_root(REPO, "-n", "--profile", "profiles/tpu", f"--configfile={config_file}")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    if seed_as_shipped:
        assert warnings == [] and "train_run" in output
        return
    assert len(warnings) == 7, warnings  # the replayed data (one line for all runs), then each run's cadence
    assert "restarts its data from the first example" in warnings[0] and all("checkpoints every 10000" in w for w in warnings[1:])
    assert "train_run" in output  # planned anyway: a warning, not an error


class NamedFiles(list):
    """Like Snakemake's output object: a list of paths that also has them as attributes."""

    def __init__(self, **named):
        super().__init__(named.values())
        self.__dict__.update(named)


def test_the_train_run_job_writes_the_warnings_into_its_log(tmp_path, monkeypatch):
    """scripts/train_run.py as Snakemake runs it (its injected `snakemake` object), with the training itself stubbed out."""
    import logging
    import runpy
    from types import SimpleNamespace

    from nanogerman import training

    config = seed_config(dataset__format="tfrecord", training__defaults__checkpoint_period=10000)
    manifest = tmp_path / "dataset.json"
    manifest.write_text(json.dumps({"maxtext": {"dataset_type": "tfds", "dataset_path": "gs://b/tfds"}}))
    trained = []
    monkeypatch.setattr(training, "train_run", lambda plan, **kwargs: trained.append(plan.name))
    log = tmp_path / "logs" / "train.log"
    plan = plan_run(config, "nano_neox_lr6e-4")
    snakemake = SimpleNamespace(  # no config: the script gets everything through the params rules/train.smk gives it
        wildcards=SimpleNamespace(run="nano_neox_lr6e-4"),
        log=[str(log)],
        rule="train_run",
        input=SimpleNamespace(dataset=str(manifest), tokenizer=str(tmp_path / "tok")),
        params=SimpleNamespace(
            results_dir=str(tmp_path / "results"),
            plan=plan_param(plan),
            backend=backend_param(plan),
            checkpoint_dir=config["training"]["checkpoint_dir"],
            vocab_size=tokenizer_vocab_size(config, plan),
        ),
        output=NamedFiles(manifest=str(tmp_path / "train.json"), metrics=str(tmp_path / "metrics.jsonl")),
    )
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        runpy.run_path(str(REPO / "scripts" / "train_run.py"), init_globals={"snakemake": snakemake})
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    assert trained == ["nano_neox_lr6e-4"]
    lines = [line for line in log.read_text().splitlines() if "WARNING" in line]
    assert len(lines) == 2, lines
    assert "spot run(s) nano_neox_lr6e-4 read the dataset through MaxText's tfds pipeline" in lines[0]
    assert "run nano_neox_lr6e-4 checkpoints every 10000 steps" in lines[1]
