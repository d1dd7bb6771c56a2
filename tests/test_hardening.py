"""Hardening: no token in a child's environment, MaxText values that survive its parser, leftovers swept, bounds."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SAMPLE_DIR, stub_run_inputs

from nanogerman import training
from nanogerman.atomic import atomic_path, sweep_leftovers
from nanogerman.childenv import child_env
from nanogerman.config import ConfigError, validate_config
from nanogerman.export_children import child_env as export_env
from nanogerman.maxtext_values import MaxTextValueError, maxtext_arg, parsed_back
from nanogerman.resume import prune_unrecorded_checkpoints, recorded_through
from nanogerman.scratch import scratch_dir, sweep_stale_scratch
from nanogerman.training import LineTail

SENTINEL = "hf_SENTINEL_env_c0ffee"


def default_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    config["corpus"]["location"] = str(SAMPLE_DIR)
    return config


# --- child environments ----------------------------------------------------------------------


def test_children_get_an_allow_listed_environment_without_tokens():
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "JAX_PLATFORMS": "tpu",
        "XLA_FLAGS": "--x",
        "LC_ALL": "C.UTF-8",
        "GOOGLE_APPLICATION_CREDENTIALS": "/keys/sa.json",
        "HF_HOME": "/cache/hf",
        "STORAGE_EMULATOR_HOST": "http://h",
        "HF_TOKEN": SENTINEL,
        "HUGGING_FACE_HUB_TOKEN": SENTINEL,
        "HF_API_TOKEN": SENTINEL,
        "GITHUB_TOKEN": SENTINEL,
        "AWS_SECRET_ACCESS_KEY": SENTINEL,
        "M_STEPS": "5",
        "M_HF_ACCESS_TOKEN": SENTINEL,
        "SOMETHING_ELSE": "x",
    }
    env = child_env(base)
    assert SENTINEL not in env.values()
    assert set(env) == {
        "PATH",
        "HOME",
        "JAX_PLATFORMS",
        "XLA_FLAGS",
        "LC_ALL",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "HF_HOME",
        "STORAGE_EMULATOR_HOST",
    }
    # what MaxText runs with: training (local, smoke) and the export's converter and forward pass
    local = training.local_env("cpu", base)
    assert SENTINEL not in local.values() and "M_STEPS" not in local and local["JAX_PLATFORMS"] == "cpu"
    exported = export_env(base)
    assert SENTINEL not in exported.values() and exported["HF_HUB_OFFLINE"] == "1"


def test_the_process_environment_is_filtered_by_default(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    assert "HF_TOKEN" not in child_env() and "HF_TOKEN" not in training.local_env("cpu")
    assert child_env(JAX_PLATFORMS="cpu")["JAX_PLATFORMS"] == "cpu"


# --- values MaxText parses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "scratch/res #1",
        "/data/a: b/c",
        "plain/path",
        "a b;touch /tmp/x $(id) 'q'",
        "x: [1]",
        "true",
        "1e-3",
        "- item",
        "'quoted'",
        '"double"',
        "tab\there",
        "#start",
        "Grüße: ß",
    ],
)
def test_strings_reach_maxtext_unchanged(value):
    argument = maxtext_arg("base_output_directory", value)
    assert argument.startswith("base_output_directory=")
    assert parsed_back(argument) == value  # what OmegaConf.from_cli, MaxText's parser, reads


def test_other_values_keep_their_type():
    assert [maxtext_arg("k", value) for value in (True, 3, 0.003, None, [1, 2], {"a": 1})] == [
        "k=true",
        "k=3",
        "k=0.003",
        "k=null",
        "k=[1,2]",
        'k={"a":1}',
    ]


def test_an_interpolation_is_refused_in_one_line():
    with pytest.raises(MaxTextValueError) as caught:
        maxtext_arg("tokenizer_path", "/data/${oc.env:HF_TOKEN}/tok")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("tokenizer_path is '/data/${oc.env:HF_TOKEN}/tok': '${' would be read")


def test_results_dir_with_comment_and_mapping_characters_is_accepted_and_an_interpolation_refused():
    config = default_config()
    config["results_dir"] = "scratch/res #1: x"
    validate_config(config)  # works end to end: see tests/test_workflow.py, which runs the default config in such a folder
    config["results_dir"] = "scratch/${x}"
    with pytest.raises(ConfigError) as caught:
        validate_config(config)
    assert str(caught.value).startswith("config error: results_dir (as an absolute path) is ")
    assert "'${' would be read as an interpolation by MaxText's config parser (OmegaConf)" in str(caught.value)


def test_maxtext_failure_line_carries_the_last_non_blank_lines():
    tail = LineTail()
    for line in [
        "I1130 loading",
        "  File 'x.py', line 3",
        "    raise SystemExit(1)",
        "config path cut at 'scratch/res'",
        "",
        "   ",
        "",
    ]:
        tail(line)
    assert tail.error_summary() == "File 'x.py', line 3 | raise SystemExit(1) | config path cut at 'scratch/res'"
    tail("ValueError: bad path")
    tail("")
    assert tail.error_summary() == "ValueError: bad path"
    assert LineTail().error_summary() == "no output"


# --- leftovers of killed jobs ------------------------------------------------------------------


def test_a_job_sweeps_the_temporary_outputs_a_killed_run_left(tmp_path):
    output = tmp_path / "results" / "tokenizers" / "tok"
    other = tmp_path / "results" / "tokenizers" / "other"
    output.parent.mkdir(parents=True)
    (output.parent / ".tok.tmp-abc123").mkdir()
    (output.parent / ".tok.tmp-abc123" / "tokenizer.json").write_text("{}")
    (output.parent / ".tok.json.tmp-x1").write_text("{}")  # another output's leftover: not this one's
    (output.parent / ".other.tmp-zz").write_text("partial")
    removed = sweep_leftovers([output, other])
    assert sorted(path.name for path in removed) == [".other.tmp-zz", ".tok.tmp-abc123"]
    assert sorted(path.name for path in output.parent.iterdir()) == [".tok.json.tmp-x1"]
    with atomic_path(output, directory=True) as folder:  # the next write works as usual
        (folder / "a").write_text("a")
    assert (output / "a").is_file()


def test_scratch_folders_are_removed_on_exit_and_a_dead_process_ones_swept(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with scratch_dir("export") as folder:
        assert Path(folder).parent == tmp_path and Path(folder).name.startswith(f"nanogerman-export-{os.getpid()}-")
        (Path(folder) / "ids.npy").write_bytes(b"x")
        with pytest.raises(RuntimeError), scratch_dir("tasks") as inner:
            raise RuntimeError("boom")
        assert not Path(inner).exists()
    assert not Path(folder).exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    stale = tmp_path / f"nanogerman-export-{dead}-abc"
    stale.mkdir()
    live = tmp_path / f"nanogerman-export-{os.getpid()}-def"
    live.mkdir()
    unrelated = tmp_path / "nanogerman-notes"
    unrelated.mkdir()
    assert sweep_stale_scratch(str(tmp_path)) == [stale]
    assert live.is_dir() and unrelated.is_dir() and not stale.exists()


def _checkpoints(folder: Path, steps) -> None:
    for step in steps:
        (folder / str(step) / "items").mkdir(parents=True)
        (folder / str(step) / "_CHECKPOINT_METADATA").write_text("{}")


def test_resume_retrains_checkpoints_newer_than_the_recorded_metrics(tmp_path, monkeypatch):
    """Killed after the checkpoint of step 50 but before MaxText logged steps 49 and 50: resume from step 0, log each step once."""
    assert recorded_through([0, 1, 2, 4]) == 2 and recorded_through([1, 2]) == -1 and recorded_through([]) == -1
    config = validate_config(default_config())
    plan = training.plan_run(config, "tiny_neox")
    tokenizer, dataset = stub_run_inputs(tmp_path)
    inputs = training.RunInputs.load(dataset, tokenizer, plan.model_path)
    context = training.prepare_job(
        plan, inputs, base_output_directory=str((tmp_path / "checkpoints").resolve()), results_dir=tmp_path
    )
    checkpoints = Path(context.checkpoint_dir)
    _checkpoints(checkpoints, (0, 50))
    context.raw_metrics.write_text("".join(json.dumps({"step": step, "learning/loss": 5.0}) + "\n" for step in range(49)))
    started = []

    def fake_maxtext(command, *, env, on_line):
        started.append(sorted(int(path.name) for path in checkpoints.iterdir()))
        with open(context.raw_metrics, "a", encoding="utf-8") as handle:  # MaxText resumes after step 0 and logs steps 1…
            handle.writelines(
                json.dumps({"step": step, "learning/loss": 4.0}) + "\n" for step in range(1, int(plan.settings["steps"]))
            )
        _checkpoints(checkpoints, (int(plan.settings["steps"]) - 1,))
        return 0

    monkeypatch.setattr(training, "run_streaming", fake_maxtext)
    result = training.run_local_backend(context)
    assert started == [[0]] and result.resumed_from_step == 0
    records = training.dedupe_steps(training.read_jsonl(context.raw_metrics))
    assert [record["step"] for record in records] == list(range(int(plan.settings["steps"])))
    assert prune_unrecorded_checkpoints(checkpoints, [0], range(10)) == []  # nothing newer than the metrics: nothing removed


# --- bounds ------------------------------------------------------------------------------------


def test_a_shard_range_beyond_any_source_is_refused_at_once():
    config = default_config()
    config["corpus"]["shard_sets"]["train"] = "5-3000000"
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        validate_config(config)
    assert time.perf_counter() - started < 1.0
    assert (
        str(caught.value)
        == "config error: corpus.shard_sets.train has the range '5-3000000', beyond the largest shard index 99999"
    )


def test_a_local_source_holds_only_the_shards_present():
    config = default_config()
    config["corpus"]["shard_sets"]["train"] = "0-3,7"
    with pytest.raises(ConfigError) as caught:
        validate_config(config)
    assert str(caught.value).startswith("config error: corpus.shard_sets names shard 7 (shard_00007.parquet), which is not in ")
    assert "(5 parquet files there; 1 named shard(s) missing)" in str(caught.value)


@pytest.mark.parametrize(
    "results_dir, expected",
    [
        ("/", "config error: results_dir is '/', the file system's root; give a folder of its own"),
        (str(Path.home()), f"config error: results_dir is '{Path.home()}', your home folder; give a folder of its own"),
        (str(REPO), f"config error: results_dir is '{REPO}', the project folder"),
        (
            "/proc/nanogerman-results",
            "config error: results_dir is '/proc/nanogerman-results', but /proc is not a writable folder",
        ),
    ],
    ids=["root", "home", "project", "not writable"],
)
def test_results_dir_must_be_a_writable_folder_of_its_own(results_dir, expected):
    config = default_config()
    config["results_dir"] = results_dir
    with pytest.raises(ConfigError) as caught:
        validate_config(copy.deepcopy(config))
    assert "\n" not in str(caught.value) and str(caught.value).startswith(expected), str(caught.value)
