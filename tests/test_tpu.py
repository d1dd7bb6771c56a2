"""The tpu backend against an emulated Cloud TPU VM (tests/gcloud_emulator.py): a real bash on every worker, real MaxText.

The emulator keeps queued resources on disk, copies into per-worker folders and runs each
ssh command with ``bash -c`` there, so the remote commands' quoting meets a real shell and
the detached training really outlives the ssh call. Each test asserts the gcloud calls and
the outcome. The environment setup is skipped by the emulator (see its docstring).

The bucket is a local folder: MaxText's checkpoints (tensorstore's OCDBT driver) do not
reach gcp-storage-emulator ("Malformed StorageGeneration", checked 2026-11-30), so the
runs get ``training.checkpoint_dir`` as a local folder after planning (the plan itself
needs gs://). Status records over gs:// are tested against the GCS emulator separately.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import gcloud_emulator
import pytest
import yaml
from conftest import REPO, SAMPLE_DIR, stub_run_inputs
from tiny_model import tiny_run
from tpu_controller import run_job

from nanogerman import tpu_env, tpu_gcloud, tpu_worker
from nanogerman.config import ConfigError, validate_config
from nanogerman.job import RunInputs, prepare_job
from nanogerman.tpu_records import TpuError, controller_lock, run_verdict
from nanogerman.training import TrainingError, checkpoint_base, plan_run

pytestmark = pytest.mark.tpu

PROJECT, ZONE, ACCELERATOR, RUNTIME = "my-project", "europe-west4-a", "v6e-1", "v2-alpha-tpuv6e"
QR = "nanogerman-v6e-1-europe-west4-a"
SCOPE = ["--project", PROJECT, "--zone", ZONE]
SSH = [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "ssh",
    QR,
    *SCOPE,
    "--worker=all",
    "--ssh-flag=-oServerAliveInterval=30",
    "--ssh-flag=-oServerAliveCountMax=4",
]
CREATE = [
    "gcloud",
    "compute",
    "tpus",
    "queued-resources",
    "create",
    QR,
    "--node-id",
    QR,
    *SCOPE,
    "--accelerator-type",
    ACCELERATOR,
    "--runtime-version",
    RUNTIME,
    "--spot",
]
DESCRIBE = ["gcloud", "compute", "tpus", "queued-resources", "describe", QR, *SCOPE, "--format=json"]
DELETE = ["gcloud", "compute", "tpus", "queued-resources", "delete", QR, *SCOPE, "--force", "--quiet"]
TPU_SENTINEL = "hf_SENTINEL_tpu_c0ffee"  # an HF_TOKEN in the controller's environment that must reach no worker
NASTY = "a b;touch pwned $(id) 'q' \"d\""  # in folder names: no shell may interpret it


def tpu_config(steps: int, checkpoint_period: int) -> dict:
    """A tiny MaxText run on the tpu backend, made to run on CPU.

    The hardware and distributed flags go into extra after validation: a user may not set them
    (the workflow does), but the emulated slice has no TPU, so its MaxText must run on CPU.
    """
    config = validate_config(
        {
            "corpus": {"source": "local", "location": str(SAMPLE_DIR), "shard_sets": {"train": "0-3", "validation": 4}},
            "dataset": {"publish_to": "gs://data/tfds"},
            "tokenizers": [{"name": "tok", "kind": "nanochat", "vocab_size": 512, "shards": "train"}],
            "training": {
                "backend": "tpu",
                "checkpoint_dir": "gs://ckpt/runs",  # the plan needs gs://; the jobs get the local stand-in bucket
                "tpu": {
                    "project": PROJECT,
                    "zone": ZONE,
                    "accelerator_type": ACCELERATOR,
                    "runtime_version": RUNTIME,
                    "poll_seconds": 0.3,
                    "heartbeat_seconds": 0.3,
                },
                "defaults": tiny_run(
                    steps,
                    checkpoint_period,
                    model=str(REPO / "config" / "models" / "nano-german-tiny.yml"),
                    global_batch_size=2,
                    max_target_length=64,
                ),
                "runs": [{"name": "demo", "tokenizer": "tok"}],
            },
        }
    )
    config["training"]["defaults"]["extra"].update(hardware="cpu", skip_jax_distributed_system=True)
    return config


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    """A 512-token tokenizer and a dataset manifest for MaxText's parquet pipeline over the sample (shared by the module)."""
    from nanogerman.tokenizer_training import TokenizerSpec, train_tokenizer

    root = tmp_path_factory.mktemp("inputs")
    tokenizer = root / "tok"
    train_tokenizer(
        TokenizerSpec.from_schema(name="tok", kind="nanochat", vocab_size=512),
        [SAMPLE_DIR / f"shard_0000{i}.parquet" for i in range(4)],
        tokenizer,
    )
    dataset = root / "dataset.json"
    dataset.write_text(
        json.dumps(
            {
                "name": "sample",
                "maxtext": {
                    "dataset_type": "hf",
                    "hf_path": "parquet",
                    "hf_train_files": str(SAMPLE_DIR / "shard_0000[0-3].parquet"),
                },
            }
        )
    )
    return tokenizer, dataset


class Emulated:
    """One emulated project: the gcloud stand-in on PATH, worker folders and a bucket folder with awkward names."""

    def __init__(self, root: Path):
        self.root = root
        self.state = root / "gcloud"
        self.workers = root / f"worker homes {NASTY}"
        self.bucket = root / f"bucket {NASTY}"
        self.results = root / "results"
        gcloud_emulator.install(root / "bin", self.state, self.workers)

    def calls(self) -> list[list[str]]:
        return gcloud_emulator.recorded_calls(self.state)

    def env(self) -> dict:
        return {
            "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "GCLOUD_EMULATOR_DIR": str(self.state),
            "XDG_CACHE_HOME": str(self.root / "cache"),
            "JAX_PLATFORMS": "cpu",
        }

    def job(self, config: dict, tiny_inputs) -> dict:
        tokenizer, dataset = tiny_inputs
        out = self.results / "train" / "demo"
        return {
            "config": config,
            "run": "demo",
            "dataset": str(dataset),
            "tokenizer": str(tokenizer),
            "training": {**config["training"], "checkpoint_dir": str(self.bucket)},
            "results": str(self.results),
            "manifest": str(out / "train.json"),
            "metrics": str(out / "metrics.jsonl"),
        }

    def launches(self) -> list[str]:
        """The workers' launch notes (tpu_worker.py's launches.log), from every slice so far."""
        return [
            line
            for path in sorted(self.workers.glob("*/*/nanogerman/runs/*/launches.log"))
            for line in path.read_text().splitlines()
        ]


@pytest.fixture
def emulated(tmp_path, monkeypatch):
    project = Emulated(tmp_path)
    for name, value in project.env().items():
        monkeypatch.setenv(name, value)
    yield project
    gcloud_emulator.cleanup(project.state)


def run_dir(job: dict) -> Path:
    """<bucket>/<run_name>: where the workers write status records, logs and MaxText's checkpoints."""
    plan = plan_run(job["config"], job["run"])
    inputs = RunInputs.load(job["dataset"], job["tokenizer"], plan.model_path)
    context = prepare_job(
        plan,
        inputs,
        base_output_directory=checkpoint_base(job["training"]["checkpoint_dir"], job["results"]),
        results_dir=job["results"],
        tokenizer_path="tokenizers/tok",
        model_path=Path(plan.model_path).name,
    )
    return Path(context.base_output_directory) / context.run_name


def kinds(calls: list[list[str]]) -> list[str]:
    """Each call as create/describe/delete/scp or ssh-<first remote word after cd>."""
    found = []
    for call in calls:
        if call[3] == "queued-resources":
            found.append(call[4])
        elif call[4] == "scp":
            found.append("scp")
        else:
            words = shlex.split(call[-1][len("--command=") :])
            found.append(
                "ssh-"
                + ("launch" if "launch" in words[3:6] else "setup" if "||" in call[-1] or "(test" in call[-1] else words[0])
            )
    return found


# --- scenarios with MaxText on the emulated slice ---------------------------------------------


@pytest.fixture(scope="module")
def killed_controller_chain(tmp_path_factory, tiny_inputs):
    """One 20-step run through four scenarios: ssh drop after launch, controller killed, rerun attaches, finished rerun.

    The bucket and the worker folders have spaces, quotes, ';' and '$(…)' in their names.
    """
    project = Emulated(tmp_path_factory.mktemp("chain"))
    env = {**os.environ, **project.env(), "HF_TOKEN": TPU_SENTINEL, "HUGGING_FACE_HUB_TOKEN": TPU_SENTINEL}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        job = project.job(tpu_config(steps=20, checkpoint_period=10), tiny_inputs)
        spec = project.root / "job.json"
        spec.write_text(json.dumps(job))
        gcloud_emulator.drop_next_ssh(project.state, "none", "none", "after")  # mkdir, setup, then the launch drops
        folder = tpu_worker.RunFolder(str(run_dir(job)))
        started = time.monotonic()
        with open(project.root / "controller.log", "w") as log_file:
            controller = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("tpu_controller.py")), str(spec)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
            # killed once the workers' record says running and the controller has handled the dropped launch
            gcloud_emulator.wait_for(
                lambda: (
                    (
                        any(r["state"] == "running" for r in folder.records())
                        and "retrying" in (project.root / "controller.log").read_text()
                    )
                    or controller.poll() is not None
                ),
                timeout=1200,
            )
            controller.send_signal(signal.SIGKILL)
            controller.wait()
        first = project.calls()
        was_running = [record["state"] for record in folder.records()]
        manifest = run_job(job)
        second = project.calls()[len(first) :]
        Path(job["manifest"]).unlink()
        again = run_job(job)
        third = project.calls()[len(first) + len(second) :]
        yield {
            "project": project,
            "job": job,
            "first": first,
            "second": second,
            "third": third,
            "manifest": manifest,
            "again": again,
            "was_running": was_running,
            "launches": project.launches(),
            "folder": folder,
            "log": (project.root / "controller.log").read_text(),
            "seconds": time.monotonic() - started,
        }
    finally:
        gcloud_emulator.cleanup(project.state)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.mark.slow
def test_normal_launch_creates_copies_installs_and_launches_detached(killed_controller_chain):
    chain = killed_controller_chain
    first, job = chain["first"], chain["job"]
    tokenizer = job["tokenizer"]
    assert first[:3] == [DESCRIBE, CREATE, DESCRIBE]
    assert kinds(first[3:8]) == ["ssh-mkdir", "scp", "scp", "ssh-setup", "ssh-launch"]
    assert first[4] == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        str(REPO / "config" / "models" / "nano-german-tiny.yml"),
        str(REPO / "envs" / "tpu-requirements.txt"),
        tpu_worker.__file__,
        f"{QR}:nanogerman/",
        *SCOPE,
        "--worker=all",
    ]
    assert first[5] == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        tokenizer,
        f"{QR}:nanogerman/tokenizers/",
        *SCOPE,
        "--worker=all",
        "--recurse",
    ]
    launch = first[7]
    assert launch[:-1] == SSH
    words = shlex.split(launch[-1][len("--command=") :])  # as the workers' shell splits it: each value one word
    run_folder = str(run_dir(job))
    assert words[:8] == ["cd", "nanogerman", "&&", "venv/bin/python", "tpu_worker.py", "launch", run_folder, words[7]]
    assert words[8:11] == ["0.3", "--", "env"] and words[11:14] == ["venv/bin/python", "-m", "maxtext.trainers.pre_train.train"]
    assert words[14:] == chain["manifest"]["maxtext_args"]
    assert f"base_output_directory={job['training']['checkpoint_dir']}" in words  # spaces, quotes, ';', '$(id)' arrive intact
    assert not list(chain["project"].root.rglob("pwned"))  # no shell ran the touch


@pytest.mark.slow
def test_ssh_drop_on_an_active_slice_reattaches_without_deleting(killed_controller_chain):
    chain = killed_controller_chain
    first = chain["first"]
    assert first[8] == DESCRIBE  # after the dropped launch: is the slice there? ACTIVE: retry, delete nothing
    assert DELETE not in first and first.count(CREATE) == 1
    assert set(kinds(first[9:])) <= {
        "describe",
        "ssh-mkdir",
        "scp",
        "ssh-setup",
        "ssh-launch",
    }  # attached (or launched again: a no-op)
    assert "launching the training: ssh exit code 255, queued resource still ACTIVE; retrying" in chain["log"]


@pytest.mark.slow
def test_a_killed_controller_leaves_the_training_running_and_a_rerun_reattaches(killed_controller_chain):
    chain = killed_controller_chain
    assert chain["was_running"] == ["running"]
    second, manifest = chain["second"], chain["manifest"]
    assert CREATE not in second and "ssh-launch" not in kinds(second) and "ssh-setup" not in kinds(second)
    assert set(kinds(second[:-1])) == {"describe"} and second[-1] == DELETE  # watched, then the slice is deleted
    started = [line for line in chain["launches"] if ": started (pid" in line]
    assert len(started) == 1, chain["launches"]  # one training copy, whatever the dropped and killed controllers did
    assert manifest["final_step"] == 19 and manifest["checkpoint_step"] == 19 and manifest["resumed_from_step"] is None
    assert manifest["backend_details"]["queued_resource"] == QR and manifest["backend_details"]["restores"] == []
    records = chain["folder"].records()
    assert [(r["state"], r["step"], r["exit_code"], r["worker"]) for r in records] == [("succeeded", 19, 0, "0")]
    assert {"started", "updated", "hostname", "pid", "attempt", "checkpoint_step"} <= set(records[0])


@pytest.mark.slow
def test_a_finished_run_rerun_starts_nothing(killed_controller_chain):
    chain = killed_controller_chain
    assert chain["third"] == []  # the status records say succeeded: no gcloud call, no slice
    again, manifest = chain["again"], chain["manifest"]
    assert again["final_step"] == manifest["final_step"] == 19 and again["checkpoint_uri"] == manifest["checkpoint_uri"]
    assert again["final_loss"] == manifest["final_loss"] and again["run_name"] == manifest["run_name"]
    steps = [json.loads(line)["step"] for line in Path(chain["job"]["metrics"]).read_text().splitlines()]
    assert steps == list(range(20))


@pytest.mark.slow
def test_preemption_recreates_the_slice_and_resumes_from_the_checkpoint(emulated, tiny_inputs):
    job = emulated.job(tpu_config(steps=60, checkpoint_period=10), tiny_inputs)
    status = run_dir(job) / "status"
    seen: list[int] = []  # the checkpoint step the uploaded status record named when the slice was lost

    def uploaded_checkpoint() -> int:
        records = [json.loads(path.read_text() or "{}") for path in status.glob("*.json")] if status.is_dir() else []
        return max((record.get("checkpoint_step") or -1 for record in records), default=-1)

    preempted = threading.Event()

    def preempt_after_a_checkpoint():
        # after the worker uploaded a checkpoint's record (and, before it, the log chunk up to that
        # checkpoint's line): the lines between that upload and the loss of the VM are lost, by design
        gcloud_emulator.wait_for(lambda: uploaded_checkpoint() >= 10, timeout=1200, every=0.02)
        seen.append(uploaded_checkpoint())
        gcloud_emulator.preempt(emulated.state, QR)
        preempted.set()

    preempter = threading.Thread(target=preempt_after_a_checkpoint, daemon=True)
    preempter.start()
    manifest = run_job(job)
    preempter.join(timeout=1)
    assert preempted.is_set()
    calls = kinds(emulated.calls())
    launches = [index for index, kind in enumerate(calls) if kind == "ssh-launch"]
    assert len(launches) == 2 and calls[:3] == ["describe", "create", "describe"]
    between = calls[launches[0] + 1 : launches[1]]  # watching, SUSPENDED: delete, create, set up the new slice again
    assert set(between[: between.index("delete")]) == {"describe"}
    assert between[between.index("delete") :] == [
        "delete",
        "describe",
        "create",
        "describe",
        "ssh-mkdir",
        "scp",
        "scp",
        "ssh-setup",
    ]
    assert calls[-1] == "delete" and calls.count("create") == 2
    assert manifest["preemptions"] == 1 and manifest["attempts"] == 2
    restored = manifest["resumed_from_step"]
    assert restored is not None and seen[0] <= restored < 59 and manifest["backend_details"]["restores"] == [restored]
    assert manifest["final_step"] == 59 and manifest["checkpoint_step"] == 59
    steps = [json.loads(line)["step"] for line in Path(job["metrics"]).read_text().splitlines()]
    after = list(range(restored + 1, 60))
    assert steps[-len(after) :] == after  # every step after the restored checkpoint, retrained and logged
    before = steps[: len(steps) - len(after)]
    # the steps the workers uploaded before the VM died, at least those before the checkpoint whose
    # record was seen; lines printed after the last upload went with it
    assert before == list(range(len(before))) and len(before) >= seen[0] - 1
    assert len([line for line in emulated.launches() if ": started (pid" in line]) == 2


# A stand-in for MaxText's trainer on the emulated workers: its step, eval and checkpoint lines and
# checkpoint folders in no time. Step 3's lines come twice, as from a resumed attempt or a re-read chunk.
STAND_IN_TRAINER = """
import sys
from pathlib import Path

args = dict(word.split("=", 1) for word in sys.argv[2:] if "=" in word)
steps, interval = int(args["steps"]), int(args["eval_interval"])
checkpoints = Path(args["base_output_directory"]) / args["run_name"] / "checkpoints"
for step in [*range(4), 3, *range(4, steps)]:
    print(f"completed step: {step}, seconds: 0.010, TFLOP/s/device: 0.1, Tokens/s/device: 6400.0, "
          f"total_weights: 128, loss: {8 - step / 10:.3f}, lm_loss: {8 - step / 10:.3f}, perplexity: 9.0", flush=True)
    if (step + 1) % interval == 0:
        print(f"I1130 10:24:01.728832 1 metric_logger.py:302] Completed eval after train step {step}, "
              f"loss={7 - step / 20:.3f}, perplexity=9.0, total_weights=512.0, avg_z_loss=0.000", flush=True)
    if step == steps - 1:
        (checkpoints / str(step) / "items").mkdir(parents=True, exist_ok=True)
        (checkpoints / str(step) / "_CHECKPOINT_METADATA").write_text("{}")
        print(f"Saved a checkpoint at step {step}, took 0.1 seconds", flush=True)
"""


def test_eval_lines_from_the_workers_land_in_metrics_jsonl_once(emulated, tmp_path, monkeypatch):
    """MaxText's eval lines in the workers' log chunks become eval/avg_loss records, one per evaluation, also when rerun."""
    stand_in = tmp_path / "stand-in"
    trainer = stand_in / "maxtext" / "trainers" / "pre_train" / "train.py"
    trainer.parent.mkdir(parents=True)
    for folder in (trainer.parents[2], trainer.parents[1], trainer.parent):
        (folder / "__init__.py").write_text("")
    trainer.write_text(STAND_IN_TRAINER)
    # the workers' python -m finds the stand-in before the real maxtext (the emulator passes the environment on)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(stand_in), os.environ.get("PYTHONPATH")])))
    tokenizer, dataset = stub_run_inputs(tmp_path)
    dataset.write_text(json.dumps({"name": "d", "maxtext": {"dataset_type": "tfds", "dataset_path": "gs://data/tfds"}}))
    config = tpu_config(steps=8, checkpoint_period=100)
    config["training"]["defaults"].update(eval_interval=3, eval_steps=1)
    job = emulated.job(config, (tokenizer, dataset))
    manifest = run_job(job)
    records = [json.loads(line) for line in Path(job["metrics"]).read_text().splitlines()]
    assert [record["step"] for record in records] == list(range(8))  # step 3, logged twice, is one record
    assert [(record["step"], record["eval/avg_loss"]) for record in records if "eval/avg_loss" in record] == [
        (2, 6.9),
        (5, 6.75),
    ]
    assert manifest["final_step"] == 7 and manifest["checkpoint_step"] == 7
    Path(job["manifest"]).unlink()
    run_job(job)  # a rerun of the finished run reads the workers' whole log again: the same records, none twice
    assert [json.loads(line) for line in Path(job["metrics"]).read_text().splitlines()] == records
    assert kinds(emulated.calls()).count("ssh-launch") == 1


# --- bad input and cheap cases ------------------------------------------------------------------


def test_creation_failure_is_one_line_and_nothing_is_retried(emulated, tiny_inputs):
    gcloud_emulator.configure(
        emulated.state,
        script={
            "create": [
                {
                    "rc": 1,
                    "stderr": "Creating queued resource...\nERROR: "
                    "(gcloud.compute.tpus.queued-resources.create) INVALID_ARGUMENT: Runtime version v2-alpha-tpuv6e is not supported\n",
                }
            ]
        },
    )
    job = emulated.job(tpu_config(steps=2, checkpoint_period=2), tiny_inputs)
    with pytest.raises(TpuError) as caught:
        run_job(job)
    message = str(caught.value)
    assert "\n" not in message and "INVALID_ARGUMENT" in message
    assert message.startswith(f"could not create queued resource {QR} (v6e-1 in europe-west4-a): ERROR:")
    assert emulated.calls() == [DESCRIBE, CREATE, DELETE]
    assert not Path(job["manifest"]).exists()


def test_quota_error_on_create_names_the_slice_and_zone(emulated, tiny_inputs):
    gcloud_emulator.configure(
        emulated.state,
        script={
            "create": [
                {
                    "rc": 1,
                    "stderr": "ERROR: (gcloud.compute.tpus.queued-resources."
                    "create) RESOURCE_EXHAUSTED: Quota 'TPUV6E_SPOT_CHIPS' exceeded. Limit: 0.0 in region europe-west4.\n",
                }
            ]
        },
    )
    with pytest.raises(tpu_gcloud.QuotaError) as caught:
        run_job(emulated.job(tpu_config(steps=2, checkpoint_period=2), tiny_inputs))
    message = str(caught.value)
    assert "\n" not in message and "request quota or choose another zone" in message
    assert message.startswith(f"no quota for spot v6e-1 in europe-west4-a (project {PROJECT}):")
    assert emulated.calls() == [DESCRIBE, CREATE, DELETE]


def test_quota_failure_while_queued_is_not_retried(emulated, tiny_inputs):
    gcloud_emulator.configure(
        emulated.state, provisioning=["WAITING_FOR_RESOURCES"], final="FAILED", failed="Quota limit 'TPUV6E' exceeded for project"
    )
    with pytest.raises(tpu_gcloud.QuotaError, match="Quota limit 'TPUV6E' exceeded"):
        run_job(emulated.job(tpu_config(steps=2, checkpoint_period=2), tiny_inputs))
    assert emulated.calls() == [DESCRIBE, CREATE, DESCRIBE, DESCRIBE, DELETE, DELETE]


def test_a_local_dataset_is_refused_before_any_gcloud_call(emulated, tiny_inputs, tmp_path):
    manifest = tmp_path / "local.json"
    manifest.write_text(json.dumps({"name": "x", "maxtext": {"dataset_type": "tfds", "dataset_path": str(tmp_path / "tfds")}}))
    job = {**emulated.job(tpu_config(steps=2, checkpoint_period=2), tiny_inputs), "dataset": str(manifest)}
    with pytest.raises(TrainingError, match="TPU workers cannot read; set dataset.publish_to"):
        run_job(job)
    assert emulated.calls() == []


def test_an_unreadable_status_record_is_one_line_naming_it(emulated, tiny_inputs):
    job = emulated.job(tpu_config(steps=2, checkpoint_period=2), tiny_inputs)
    record = run_dir(job) / "status" / "0.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"state": "running", "step": 1')  # torn
    with pytest.raises(TpuError) as caught:
        run_job(job)
    assert str(caught.value) == (
        f"{record}: unreadable status record (Expecting ',' delimiter); delete it and rerun the job (the workers rewrite it)"
    )
    assert emulated.calls() == []


def test_a_second_controller_of_the_same_run_says_who_holds_it(emulated, tiny_inputs):
    job = emulated.job(tpu_config(steps=2, checkpoint_period=2), tiny_inputs)
    with controller_lock(str(run_dir(job)), "demo"):
        with pytest.raises(TpuError) as caught:
            run_job(job)
    message = str(caught.value)
    assert message.startswith(f"run demo ({run_dir(job)}) is already watched by pid {os.getpid()} on ")
    assert "wait for that job, or stop it, then rerun" in message and "\n" not in message
    assert emulated.calls() == []


def test_the_stop_command_stops_a_detached_run_and_deletes_the_slice(emulated):
    """`python -m nanogerman.tpu stop …` (the README's command) on a worker running a stand-in training that never ends."""
    target = tpu_gcloud.TpuTarget(QR, PROJECT, ZONE, ACCELERATOR, RUNTIME, "spot")
    resource = tpu_gcloud.QueuedResource(
        target, {"wait_timeout_minutes": 1, "max_restarts": 0, "poll_seconds": 0}, on_line=lambda line: None
    )
    resource.ensure_active()
    folder = str(emulated.bucket / "forever-0123abcd")
    resource.remote("mkdir -p nanogerman && python3 -m uv venv --python 3.12 nanogerman/venv", what="venv")
    resource.copy([tpu_worker.__file__], "nanogerman/", what="copy")
    forever = ["venv/bin/python", "-c", "import time\nprint('completed step: 0', flush=True)\ntime.sleep(600)"]
    resource.remote(
        "cd nanogerman && " + shlex.join(["venv/bin/python", "tpu_worker.py", "launch", folder, "1", "0.2", "--", *forever]),
        what="launch",
    )
    gcloud_emulator.wait_for(lambda: any(r["step"] == 0 for r in tpu_worker.RunFolder(folder).records()), timeout=60)
    result = subprocess.run(
        [sys.executable, "-m", "nanogerman.tpu", "stop", QR, "--project", PROJECT, "--zone", ZONE, "--run-dir", folder],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "nanogerman-worker 0: stopping (pid" in result.stdout and "nanogerman-worker 0: stopped (pid" in result.stdout
    # stop waits for the supervisor, so its record is final before the slice is deleted (which kills what is left)
    records = tpu_worker.RunFolder(folder).records()
    assert [(r["state"], r["exit_code"]) for r in records] == [("stopped", -signal.SIGTERM)]
    assert emulated.calls()[-1] == DELETE and not (emulated.state / "qr" / f"{QR}.json").exists()


def test_status_records_round_trip_through_the_gcs_emulator(gcs_emulator):
    from nanogerman.gcs import gcs_filesystem

    gcs_filesystem().mkdir("records-bucket")
    folder = tpu_worker.RunFolder("gs://records-bucket/runs/demo-0123abcd")
    record = {"state": "running", "step": 3, "worker": "0", "updated": "2026-11-30T10:00:00Z", "attempt": "1"}
    folder.write_text("status/0.json", json.dumps(record))
    folder.write_text("log/0/1-000001.txt", "completed step: 3\n")
    assert folder.records() == [record] and folder.list("log/0") == ["1-000001.txt"]
    assert run_verdict(folder.records(), now=calendar.timegm((2026, 11, 30, 10, 0, 30)), stale_seconds=60) == "running"


def test_run_verdicts():
    def record(state, worker="0", attempt="2", updated="2026-11-30T10:00:00Z"):
        return {"state": state, "worker": worker, "attempt": attempt, "updated": updated}

    now = calendar.timegm((2026, 11, 30, 10, 0, 0))
    assert run_verdict([], now=now, stale_seconds=60) == "none"
    assert run_verdict([record("succeeded"), record("succeeded", "1")], now=now, stale_seconds=60) == "succeeded"
    assert run_verdict([record("succeeded"), record("running", "1")], now=now, stale_seconds=60) == "running"
    assert run_verdict([record("succeeded"), record("failed", "1")], now=now, stale_seconds=60) == "failed"
    assert run_verdict([record("running")], now=now + 61, stale_seconds=60) == "stale"
    assert run_verdict([record("interrupted"), record("running", "1")], now=now, stale_seconds=60) == "interrupted"
    assert (
        run_verdict([record("failed", attempt="1"), record("running", "1", attempt="2")], now=now, stale_seconds=60) == "running"
    )


@pytest.mark.slow
def test_no_token_reaches_a_gcloud_argument_or_a_remote_command(killed_controller_chain):
    """The controller ran with HF_TOKEN set: it appears in no gcloud call, no remote command and no local output."""
    chain = killed_controller_chain
    calls = chain["first"] + chain["second"] + chain["third"]
    remote = [call[-1] for call in calls if call[4] == "ssh"]
    assert len(remote) >= 3 and any("maxtext.trainers.pre_train.train" in command for command in remote)
    assert all(TPU_SENTINEL not in argument for call in calls for argument in call)
    assert not any(
        word.startswith(("HF_TOKEN=", "HUGGING_FACE_HUB_TOKEN=", "hf_access_token="))
        for command in remote
        for word in shlex.split(command[len("--command=") :])
    )
    outputs = [Path(chain["job"]["manifest"]), Path(chain["job"]["metrics"]), chain["project"].root / "controller.log"]
    assert all(TPU_SENTINEL not in path.read_text() for path in outputs)


def test_decisions():
    assert [
        tpu_gcloud.provisioning_action(state)
        for state in (
            None,
            "ACCEPTED",
            "WAITING_FOR_RESOURCES",
            "PROVISIONING",
            "ACTIVE",
            "SUSPENDING",
            "SUSPENDED",
            "FAILED",
            "DELETING",
        )
    ] == ["create", "wait", "wait", "wait", "ready", "recreate", "recreate", "recreate", "wait"]
    assert tpu_gcloud.outcome_action(0, "ACTIVE") == "done"
    assert tpu_gcloud.outcome_action(1, "ACTIVE") == "failed"
    assert tpu_gcloud.outcome_action(255, "ACTIVE") == "dropped"
    assert tpu_gcloud.outcome_action(1, "SUSPENDED") == "preempted"
    assert tpu_gcloud.outcome_action(137, None) == "preempted"


def test_argument_lists_quote_nothing_and_choose_the_provisioning_flag():
    target = tpu_gcloud.TpuTarget.from_settings(
        {
            "project": "p",
            "zone": "us-central2-b",
            "accelerator_type": "v4-32",
            "runtime_version": "v2-alpha-tpuv4-pod",
            "provisioning": "on-demand",
            "name_prefix": "nanogerman",
        }
    )
    assert target.name == "nanogerman-v4-32-us-central2-b"
    assert tpu_gcloud.create_args(target)[-4:] == ["--accelerator-type", "v4-32", "--runtime-version", "v2-alpha-tpuv4-pod"]
    reserved = tpu_gcloud.TpuTarget(**{**target.__dict__, "provisioning": "reserved"})
    assert tpu_gcloud.create_args(reserved)[-1] == "--reserved"
    command = tpu_gcloud.launch_command("gs://b/r x", "0001", 60, ["m.yml", "x=a b", "y=$(rm -rf ~)"], env={"A": "1 2"})
    assert shlex.split(command) == [
        "cd",
        "nanogerman",
        "&&",
        "venv/bin/python",
        "tpu_worker.py",
        "launch",
        "gs://b/r x",
        "0001",
        "60",
        "--",
        "env",
        "A=1 2",
        "venv/bin/python",
        "-m",
        "maxtext.trainers.pre_train.train",
        "m.yml",
        "x=a b",
        "y=$(rm -rf ~)",
    ]


def test_a_tpu_run_needs_a_published_dataset():
    config = tpu_config(steps=2, checkpoint_period=2)
    config["dataset"]["publish_to"] = None
    with pytest.raises(ConfigError) as caught:
        validate_config(config)
    assert str(caught.value) == (
        "config error: dataset.publish_to is null; the tpu backend's workers read the dataset from Cloud Storage: "
        "set dataset.publish_to to a gs://bucket/prefix"
    )


def test_worker_requirements_are_the_lock_file_pins():
    lock, runtime_text = (REPO / "requirements.lock").read_text(), (REPO / "envs" / "maxtext-runtime.txt").read_text()
    generated = tpu_env.tpu_requirements(lock, runtime_text)
    assert (REPO / "envs" / "tpu-requirements.txt").read_text() == generated, (
        "envs/tpu-requirements.txt is stale: .venv/bin/python -m nanogerman.tpu > envs/tpu-requirements.txt"
    )
    pins = dict(line.split("==") for line in generated.splitlines() if "==" in line and not line.startswith("#"))
    locked = dict(line.split("==") for line in lock.splitlines() if "==" in line)
    assert pins["maxtext"] == locked["maxtext"] and pins["jax"] == locked["jax"] and "libtpu" in pins
    assert "torch" not in pins and "snakemake" not in pins and "lm_eval" not in pins

    def normalize(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    runtime = [
        normalize(line.split(">=")[0].split("==")[0]) for line in runtime_text.splitlines() if line and not line.startswith("#")
    ]
    normalized = {normalize(name) for name in pins}
    missing = [name for name in runtime if name not in normalized]
    assert not missing, f"MaxText runtime dependencies left off the workers: {missing}"


def test_tpu_config_needs_a_gcs_checkpoint_dir():
    config = tpu_config(steps=2, checkpoint_period=2)
    config["training"]["checkpoint_dir"] = None
    with pytest.raises(ConfigError, match=r"^config error: training.checkpoint_dir is None; the tpu backend needs a gs://"):
        validate_config(config)


def test_batch_must_divide_over_the_slice():
    config = tpu_config(steps=2, checkpoint_period=2)
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
    result = snakemake_run(
        tmp_path,
        None,
        "-n",
        "--profile",
        str(repo / "profiles" / "tpu"),
        "--configfile",
        str(repo / "config" / "nano-german.yaml"),
        "--quiet",
        "rules",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for rule, count in (("train_run", 6), ("train_fit", 6), ("train_smoke", 2)):
        assert any(line.split()[:2] == [rule, str(count)] for line in output.splitlines()), output[-3000:]
