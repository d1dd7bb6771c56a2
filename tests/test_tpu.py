"""The tpu backend against a fake gcloud on PATH: normal run, preemption and resume, creation failure, quota error.

Each test scripts the fake's answers (tests/fake_gcloud.py) and asserts the exact
gcloud calls the backend made. The remote commands are checked by splitting them
the way the workers' shell does, so every config value must arrive as one word.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

import fake_gcloud
from conftest import REPO
from nanogerman import tpu
from nanogerman.config import ConfigError, validate_config
from nanogerman.training import TrainingError, plan_run, train_run

pytestmark = pytest.mark.tpu

PROJECT, ZONE, ACCELERATOR, RUNTIME = "my-project", "europe-west4-a", "v6e-8", "v2-alpha-tpuv6e"
QR = "nanogerman-v6e-8-europe-west4-a"
SCOPE = ["--project", PROJECT, "--zone", ZONE]
SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", QR, *SCOPE, "--worker=all",
       "--ssh-flag=-oServerAliveInterval=30", "--ssh-flag=-oServerAliveCountMax=4"]
CREATE = ["gcloud", "compute", "tpus", "queued-resources", "create", QR, "--node-id", QR, *SCOPE,
          "--accelerator-type", ACCELERATOR, "--runtime-version", RUNTIME, "--spot"]
DESCRIBE = ["gcloud", "compute", "tpus", "queued-resources", "describe", QR, *SCOPE, "--format=json"]
DELETE = ["gcloud", "compute", "tpus", "queued-resources", "delete", QR, *SCOPE, "--force", "--quiet"]
NASTY = "a b;touch /tmp/pwned $(id) 'q'"  # a config value no shell may interpret


def step_lines(first: int, last: int, checkpoint: int | None = None, loss: float = 5.0) -> list[str]:
    lines = [
        f"I1128 metric_logger.py:265] completed step: {step}, seconds: 0.500, TFLOP/s/device: 1.000, "
        f"Tokens/s/device: 2048.000, total_weights: 512, loss: {loss - 0.1 * step:.3f}, lm_loss: 1.0, perplexity: 2.0"
        for step in range(first, last + 1)
    ]
    if checkpoint is not None:
        lines.append(f"I1128 checkpointing.py:598] Saved a checkpoint at step {checkpoint}.")
    return lines


@pytest.fixture
def tpu_job(tmp_path, monkeypatch):
    """A tpu run with a fake gs:// dataset, a tokenizer folder and a fake gcloud first on PATH."""
    state = tmp_path / "gcloud"
    tokenizer = tmp_path / "results" / "tokenizers" / "tok"
    tokenizer.mkdir(parents=True)
    (tokenizer / "tokenizer.json").write_text('{"model": "fake"}', encoding="utf-8")
    (tokenizer / "stats.json").write_text(json.dumps({"vocab_size": 2000, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}))
    dataset = tmp_path / "results" / "dataset" / "dataset.json"
    dataset.parent.mkdir(parents=True)
    dataset.write_text(json.dumps({
        "name": "german_maxtext_nano_data", "version": "1.0.0", "checksums": {"a": "b"},
        "maxtext": {"dataset_type": "tfds", "dataset_path": "gs://data/tfds", "dataset_name": "german_maxtext_nano_data:1.0.0",
                    "train_split": "train", "eval_dataset_name": "german_maxtext_nano_data:1.0.0", "eval_split": "validation"},
    }))
    config = {
        "corpus": {"source": "local", "location": "x", "shard_sets": {"train": 0, "validation": 1}},
        "tokenizers": [{"name": "tok", "kind": "neox", "vocab_size": 2048, "shards": "train"}],
        "training": {
            "backend": "tpu",
            "checkpoint_dir": "gs://ckpt/runs",
            "tpu": {"project": PROJECT, "zone": ZONE, "accelerator_type": ACCELERATOR, "runtime_version": RUNTIME,
                    "poll_seconds": 0},
            "defaults": {"model": str(REPO / "config" / "models" / "nano-german-tiny.yml"), "learning_rate": 1e-3,
                         "steps": 8, "global_batch_size": 16, "max_target_length": 64, "checkpoint_period": 4,
                         "extra": {"profiler_steps": 5, "run_note": NASTY}},
            "runs": [{"name": "demo", "tokenizer": "tok"}],
        },
    }
    validated = validate_config(config)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GCLOUD_DIR", str(state))

    def run(scenario: dict):
        fake_gcloud.install(tmp_path / "bin", state, scenario)
        out = tmp_path / "results" / "train" / "demo"
        return train_run(
            plan_run(validated, "demo"), dataset_manifest=dataset, tokenizer_dir=tokenizer, training=validated["training"],
            results_dir=tmp_path / "results", manifest_out=out / "train.json", metrics_out=out / "metrics.jsonl",
        )

    run.calls = lambda: fake_gcloud.recorded_calls(state)
    run.config = validated
    run.out = tmp_path / "results" / "train" / "demo"
    run.requirements = str(REPO / "envs" / "tpu-requirements.txt")
    run.model = str(REPO / "config" / "models" / "nano-german-tiny.yml")
    run.tokenizer = str(tokenizer)
    return run


def setup_calls(job) -> list[list[str]]:
    """mkdir, copy the model and requirements, copy the tokenizer folder, install the environment."""
    stamp = tpu.environment_stamp(Path(job.requirements).read_text(), "3.12", "0.13.8")
    return [
        [*SSH, "--command=mkdir -p nanogerman nanogerman/tokenizers"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", job.model, job.requirements, f"{QR}:nanogerman/", *SCOPE, "--worker=all"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", job.tokenizer, f"{QR}:nanogerman/tokenizers/", *SCOPE, "--worker=all", "--recurse"],
        [*SSH, f"--command=cd nanogerman && (test -f venv/{stamp} || (python3 -m pip install --user --quiet uv==0.13.8 && "
               f"python3 -m uv venv --python 3.12 venv && python3 -m uv pip install --python venv/bin/python -r tpu-requirements.txt "
               f"&& touch venv/{stamp}))"],
    ]


def remote_words(call: list[str]) -> list[str]:
    command = call[-1]
    assert command.startswith("--command=")
    return shlex.split(command[len("--command="):])


def test_normal_run_creates_waits_sets_up_trains_and_deletes(tpu_job):
    manifest = tpu_job({
        "describe": [{"state": "NOT_FOUND"}, {"state": "WAITING_FOR_RESOURCES"}, {"state": "PROVISIONING"}, {"state": "ACTIVE"}],
        "ssh-train": [{"lines": step_lines(0, 7, checkpoint=7)}],
    })
    calls = tpu_job.calls()
    train = calls[-2]
    assert calls == [DESCRIBE, CREATE, DESCRIBE, DESCRIBE, DESCRIBE, *setup_calls(tpu_job), train, DELETE]
    assert train[:-1] == SSH
    words = remote_words(train)
    assert words[:6] == ["cd", "nanogerman", "&&", "env", "venv/bin/python", "-m"]
    assert words[6] == "maxtext.trainers.pre_train.train"
    assert words[7:] == manifest["maxtext_args"]  # every argument arrives as one word, unchanged
    arguments = dict(word.split("=", 1) for word in words[8:])
    assert arguments["run_note"] == NASTY
    assert arguments["tokenizer_path"] == "tokenizers/tok" and words[7] == "nano-german-tiny.yml"
    assert arguments["base_output_directory"] == "gs://ckpt/runs"
    assert arguments["per_device_batch_size"] == "2"  # 16 sequences over 8 chips
    assert "hardware" not in arguments and "metrics_file" not in arguments
    assert manifest["final_step"] == 7 and manifest["checkpoint_step"] == 7
    assert manifest["checkpoint_uri"] == f"gs://ckpt/runs/{manifest['run_name']}/checkpoints/7/items"
    assert manifest["attempts"] == 1 and manifest["preemptions"] == 0 and manifest["resumed_from_step"] is None
    assert manifest["tokens_seen"] == 8 * 512 and manifest["vocab_size"] == 2048
    assert manifest["accelerator"] == ACCELERATOR and manifest["devices"] == 8
    records = [json.loads(line) for line in (tpu_job.out / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == list(range(8))


def test_preemption_mid_run_recreates_and_resumes_with_the_same_run_name(tpu_job):
    manifest = tpu_job({
        "describe": [{"state": "NOT_FOUND"}, {"state": "ACTIVE"}, {"state": "SUSPENDED"}, {"state": "NOT_FOUND"}, {"state": "ACTIVE"}],
        "ssh-train": [
            {"lines": step_lines(0, 5, checkpoint=4, loss=9.0), "rc": 255},  # the slice goes away after step 5
            {"lines": ["I1128 checkpointing.py:705] restoring from this run's directory step 4", *step_lines(5, 7, checkpoint=7)]},
        ],
    })
    calls = tpu_job.calls()
    trains = [call for call in calls if fake_gcloud.kind_of(call[1:]) == "ssh-train"]
    assert calls == [
        DESCRIBE, CREATE, DESCRIBE, *setup_calls(tpu_job), trains[0],
        DESCRIBE, DELETE,                              # SUSPENDED: preempted -> delete
        DESCRIBE, CREATE, DESCRIBE, *setup_calls(tpu_job), trains[1],
        DELETE,
    ]
    assert trains[0] == trains[1]  # same run_name, same arguments: MaxText resumes
    assert manifest["preemptions"] == 1 and manifest["attempts"] == 2
    assert manifest["resumed_from_step"] == 4 and manifest["backend_details"]["restores"] == [4]
    records = [json.loads(line) for line in (tpu_job.out / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == list(range(8))
    assert records[5]["learning/loss"] == pytest.approx(5.0 - 0.5)  # step 5 as rerun after the resume, not the lost one


def test_ssh_session_dropping_while_active_counts_as_preemption(tpu_job):
    manifest = tpu_job({
        "describe": [{"state": "ACTIVE"}],  # reattached: already there
        "ssh-train": [{"lines": step_lines(0, 2), "rc": 255}, {"lines": step_lines(0, 7, checkpoint=7)}],
    })
    calls = tpu_job.calls()
    trains = [call for call in calls if fake_gcloud.kind_of(call[1:]) == "ssh-train"]
    assert calls == [DESCRIBE, *setup_calls(tpu_job), trains[0], DESCRIBE, DELETE,
                     DESCRIBE, *setup_calls(tpu_job), trains[1], DELETE]
    assert manifest["preemptions"] == 1


def test_creation_failure_is_one_line_and_nothing_is_retried(tpu_job):
    with pytest.raises(tpu.TpuError) as caught:
        tpu_job({
            "describe": [{"state": "NOT_FOUND"}],
            "create": [{"rc": 1, "stderr": "Creating queued resource...\nERROR: (gcloud.compute.tpus.queued-resources.create) "
                                           "INVALID_ARGUMENT: Runtime version v2-alpha-tpuv6e is not supported\n"}],
        })
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"could not create queued resource {QR} (v6e-8 in europe-west4-a): ERROR:")
    assert "INVALID_ARGUMENT" in message
    assert tpu_job.calls() == [DESCRIBE, CREATE, DELETE]
    assert not (tpu_job.out / "train.json").exists()


def test_quota_error_on_create_names_the_slice_and_zone(tpu_job):
    with pytest.raises(tpu.QuotaError) as caught:
        tpu_job({
            "describe": [{"state": "NOT_FOUND"}],
            "create": [{"rc": 1, "stderr": "ERROR: (gcloud.compute.tpus.queued-resources.create) RESOURCE_EXHAUSTED: "
                                           "Quota 'TPUV6E_SPOT_CHIPS' exceeded. Limit: 0.0 in region europe-west4.\n"}],
        })
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"no quota for spot v6e-8 in europe-west4-a (project {PROJECT}):")
    assert "request quota or choose another zone" in message
    assert tpu_job.calls() == [DESCRIBE, CREATE, DELETE]


def test_quota_failure_while_queued_is_not_retried(tpu_job):
    with pytest.raises(tpu.QuotaError, match="Quota limit 'TPUV6E' exceeded"):
        tpu_job({
            "describe": [{"state": "NOT_FOUND"}, {"state": "WAITING_FOR_RESOURCES"},
                         {"state": "FAILED", "failed": "Quota limit 'TPUV6E' exceeded for project"}],
        })
    assert tpu_job.calls() == [DESCRIBE, CREATE, DESCRIBE, DESCRIBE, DELETE, DELETE]


def test_training_failure_on_an_active_slice_is_not_retried(tpu_job):
    with pytest.raises(TrainingError) as caught:
        tpu_job({
            "describe": [{"state": "ACTIVE"}],
            "ssh-train": [{"lines": [*step_lines(0, 1), "ValueError: vocab_size 2048 must be divisible by 256"], "rc": 1}],
        })
    message = str(caught.value)
    assert "\n" not in message and "ValueError: vocab_size 2048 must be divisible by 256" in message
    calls = tpu_job.calls()
    assert calls[-2:] == [DESCRIBE, DELETE] and sum(call == CREATE for call in calls) == 0


def test_too_many_preemptions_give_up_with_one_line(tpu_job):
    tpu_job.config["training"]["tpu"]["max_restarts"] = 1
    with pytest.raises(tpu.TpuError, match=r"preempted 2 times \(limit training.tpu.max_restarts = 1\)"):
        tpu_job({"describe": [{"state": "ACTIVE"}], "ssh-train": [{"rc": 255}]})
    assert sum(fake_gcloud.kind_of(call[1:]) == "ssh-train" for call in tpu_job.calls()) == 2


def test_keep_leaves_the_slice_running(tpu_job):
    tpu_job.config["training"]["tpu"]["keep"] = True
    tpu_job({"describe": [{"state": "ACTIVE"}], "ssh-train": [{"lines": step_lines(0, 7, checkpoint=7)}]})
    assert DELETE not in tpu_job.calls()


def test_a_local_dataset_is_refused_before_any_gcloud_call(tpu_job, tmp_path):
    manifest = tmp_path / "results" / "dataset" / "dataset.json"
    data = json.loads(manifest.read_text())
    data["maxtext"]["dataset_path"] = str(tmp_path / "tfds")
    manifest.write_text(json.dumps(data))
    with pytest.raises(TrainingError, match="TPU workers cannot read; set dataset.publish_to"):
        tpu_job({})
    assert tpu_job.calls() == []


def test_no_token_reaches_a_gcloud_argument_or_a_remote_command(tpu_job, monkeypatch):
    """An HF_TOKEN in the environment appears in no gcloud call and no remote command, through a preemption and a resume."""
    sentinel = "hf_SENTINEL_tpu_c0ffee"
    monkeypatch.setenv("HF_TOKEN", sentinel)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", sentinel)
    manifest = tpu_job({
        "describe": [{"state": "ACTIVE"}],
        "ssh-train": [{"lines": step_lines(0, 3, checkpoint=2), "rc": 255},
                      {"lines": ["I1128 checkpointing.py:705] restoring from this run's directory step 2", *step_lines(3, 7, checkpoint=7)]}],
    })
    calls = tpu_job.calls()
    remote = [remote_words(call) for call in calls if call[4] == "ssh"]
    assert len(remote) >= 4 and any("maxtext.trainers.pre_train.train" in words for words in remote)
    assert all(sentinel not in argument for call in calls for argument in call)
    assert all(sentinel not in word and not word.startswith(("HF_TOKEN=", "HUGGING_FACE_HUB_TOKEN=", "hf_access_token="))
               for words in remote for word in words)
    assert sentinel not in json.dumps(manifest) and sentinel not in (tpu_job.out / "metrics.jsonl").read_text()


def test_decisions():
    assert [tpu.provisioning_action(state) for state in (None, "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE",
                                                          "SUSPENDING", "SUSPENDED", "FAILED", "DELETING")] == [
        "create", "wait", "wait", "wait", "ready", "recreate", "recreate", "recreate", "wait"]
    assert tpu.outcome_action(0, "ACTIVE") == "done"
    assert tpu.outcome_action(1, "ACTIVE") == "failed"
    assert tpu.outcome_action(255, "ACTIVE") == "preempted"
    assert tpu.outcome_action(1, "SUSPENDED") == "preempted"
    assert tpu.outcome_action(137, None) == "preempted"


def test_argument_lists_quote_nothing_and_choose_the_provisioning_flag():
    target = tpu.TpuTarget.from_settings({"project": "p", "zone": "us-central2-b", "accelerator_type": "v4-32",
                                          "runtime_version": "v2-alpha-tpuv4-pod", "provisioning": "on-demand"})
    assert target.name == "nanogerman-v4-32-us-central2-b"
    assert tpu.create_args(target)[-4:] == ["--accelerator-type", "v4-32", "--runtime-version", "v2-alpha-tpuv4-pod"]
    reserved = tpu.TpuTarget(**{**target.__dict__, "provisioning": "reserved"})
    assert tpu.create_args(reserved)[-1] == "--reserved"
    command = tpu.train_command(["m.yml", "x=a b", "y=$(rm -rf ~)"], env={"A": "1 2"})
    assert shlex.split(command) == ["cd", "nanogerman", "&&", "env", "A=1 2", "venv/bin/python", "-m",
                                    "maxtext.trainers.pre_train.train", "m.yml", "x=a b", "y=$(rm -rf ~)"]


def test_worker_requirements_are_the_lock_file_pins():
    lock, runtime_text = (REPO / "requirements.lock").read_text(), (REPO / "envs" / "maxtext-runtime.txt").read_text()
    generated = tpu.tpu_requirements(lock, runtime_text)
    assert (REPO / "envs" / "tpu-requirements.txt").read_text() == generated, (
        "envs/tpu-requirements.txt is stale: .venv/bin/python -m nanogerman.tpu > envs/tpu-requirements.txt"
    )
    pins = dict(line.split("==") for line in generated.splitlines() if "==" in line and not line.startswith("#"))
    locked = dict(line.split("==") for line in lock.splitlines() if "==" in line)
    assert pins["maxtext"] == locked["maxtext"] and pins["jax"] == locked["jax"] and "libtpu" in pins
    assert "torch" not in pins and "snakemake" not in pins and "lm_eval" not in pins
    def normalize(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    runtime = [normalize(line.split(">=")[0].split("==")[0]) for line in runtime_text.splitlines() if line and not line.startswith("#")]
    normalized = {normalize(name) for name in pins}
    missing = [name for name in runtime if name not in normalized]
    assert not missing, f"MaxText runtime dependencies left off the workers: {missing}"


def test_tpu_config_needs_a_gcs_checkpoint_dir(tpu_job):
    config = json.loads(json.dumps(tpu_job.config))
    config["training"]["checkpoint_dir"] = None
    with pytest.raises(ConfigError, match=r"^config error: training.checkpoint_dir is None; the tpu backend needs a gs://"):
        validate_config(config)


def test_batch_must_divide_over_the_slice(tpu_job):
    config = json.loads(json.dumps(tpu_job.config))
    config["training"]["runs"][0]["tpu"] = {"accelerator_type": "v4-32", "zone": "us-central2-b"}
    config["training"]["runs"][0]["gradient_accumulation_steps"] = 2
    config["training"]["runs"][0]["global_batch_size"] = 1000
    with pytest.raises(ConfigError) as caught:
        validate_config(config)
    assert str(caught.value) == (
        "config error: training.runs[0].global_batch_size 1000 is not divisible by devices x gradient_accumulation_steps "
        "= 16 x 2 = 32; change global_batch_size or gradient_accumulation_steps"
    )


def test_the_tpu_profile_selects_the_tpu_backend_and_serializes_slices(tmp_path, snakemake_run, repo):
    """A dry run of the seed's config with profiles/tpu: fit jobs, tpu_pod=1 on every slice job."""
    config = validate_config(yaml.safe_load((repo / "config" / "nano-german.yaml").read_text()))
    assert config["training"]["backend"] == "local"  # the profile, not the config, chooses the tpu backend
    result = snakemake_run(tmp_path, None, "-n", "--profile", str(repo / "profiles" / "tpu"), "--configfile",
                           str(repo / "config" / "nano-german.yaml"), "--quiet", "rules")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for rule, count in (("train_run", 6), ("train_fit", 6), ("train_smoke", 2)):
        assert any(line.split()[:2] == [rule, str(count)] for line in output.splitlines()), output[-3000:]
