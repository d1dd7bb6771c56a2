"""The ``tpu`` training backend: Cloud TPU queued resources driven through ``gcloud``, training detached on the workers.

For each job: take the run's lock on this machine (a second controller of the same run
stops with the holder's pid and host), create the queued resource (or reattach to the one
that is there), wait until it is ACTIVE, and read the run's status records in
``<checkpoint_dir>/<run_name>/status/``. Then:

- every record of the latest attempt says ``succeeded``: nothing is started (a finished
  run rerun); the job only collects the log and writes the manifest;
- a record is ``running`` with a fresh heartbeat: the job attaches to it, starting nothing;
- otherwise: copy the model, the tokenizer, the pinned environment spec and
  :mod:`nanogerman.tpu_worker` to every worker, install the environment once per VM, and
  launch. The launch ssh call returns at once: ``tpu_worker.py launch`` starts MaxText in
  its own session (``setsid``; why that and not systemd or a startup script is in
  :mod:`nanogerman.tpu_worker`), and does nothing on a worker that already runs it.

The job then only watches: the queued resource's state, the status records, and the log
chunks the workers upload, streamed into the job's log (and its per-step metrics). It
ends with the same ``train.json`` as the local backend.

- A dropped ssh call on an ACTIVE slice is retried; the launch is idempotent, so that
  re-attaches. Nothing is deleted.
- A lost slice (SUSPENDED, FAILED or gone) is deleted and recreated, and the run launched
  again with the same ``run_name``: MaxText resumes from the last checkpoint in gs://.
- The controller dying (laptop asleep, ``kill -9``), Ctrl-C or Snakemake's SIGTERM leave the
  training running; the slice is kept. Rerunning the job re-attaches. To stop a detached run
  and delete its slice: ``python -m nanogerman.tpu stop <queued-resource> --project P
  --zone Z --run-dir gs://…/<run_name>`` (see README).
- A workers' heartbeat older than ``training.tpu.stale_minutes`` on an ACTIVE slice (the
  training died without a record, e.g. the VM rebooted), or a record saying ``interrupted``
  (MaxText got a SIGTERM it was not sent by ``stop``), launches again (idempotent).

At the end the queued resource is deleted unless ``training.tpu.keep`` is set.

Every ``gcloud`` call is an argument list (no local shell). The command that runs on the
workers goes through their login shell, so it is assembled with :func:`shlex.quote` around
every value that comes from the config or a path (tests/gcloud_emulator.py runs it in bash).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nanogerman import tpu_worker
from nanogerman.curves import LogRecorder, log_metrics_path
from nanogerman.errors import StageError
from nanogerman.job import (
    TRAIN_MODULE,
    BackendResult,
    JobContext,
    LineTail,
    RunInputs,
    RunPlan,
    TrainingError,
    prepare_job,
    run_streaming,
    safe_name,
    smoke_args,
)
from nanogerman.metrics import StepRecorder, dedupe_steps, read_jsonl
from nanogerman.provenance import PROJECT_ROOT
from nanogerman.tpu_env import tpu_requirements
from nanogerman.tpu_records import LogStreamer, TpuError, controller_lock, latest_attempt, read_records, run_verdict

log = logging.getLogger(__name__)

GCLOUD = "gcloud"
REMOTE_ROOT = "nanogerman"  # on each worker, relative to the ssh user's home
WORKER_SCRIPT = "tpu_worker.py"
WAITING_STATES = frozenset({"CREATING", "ACCEPTED", "PROVISIONING", "WAITING_FOR_RESOURCES", "DELETING"})
LOST_STATES = frozenset({"SUSPENDING", "SUSPENDED", "FAILED"})
SSH_DROPPED = 255  # ssh's own exit code when the connection fails or drops
QUOTA_MARKERS = ("quota", "RESOURCE_EXHAUSTED")


class QuotaError(TpuError):
    """The project has no quota for the requested slice."""


class _Preempted(Exception):
    """The slice went away during setup or training (internal: triggers delete and recreate)."""


class _Dropped(Exception):
    """An ssh call dropped while the slice stayed ACTIVE (internal: retried, nothing deleted)."""


# --- pure parts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TpuTarget:
    """One queued resource: where and what to create."""

    name: str
    project: str
    zone: str
    accelerator_type: str
    runtime_version: str
    provisioning: str = "spot"

    @classmethod
    def from_settings(cls, settings: dict) -> TpuTarget:
        """From a run's validated ``training.tpu`` settings (:attr:`RunPlan.tpu`)."""
        name = safe_name(f"{settings['name_prefix']}-{settings['accelerator_type']}-{settings['zone']}")[:63].rstrip("-")
        return cls(
            name,
            str(settings["project"]),
            str(settings["zone"]),
            str(settings["accelerator_type"]),
            str(settings["runtime_version"]),
            str(settings["provisioning"]),
        )

    def scope(self) -> list[str]:
        return ["--project", self.project, "--zone", self.zone]


def create_args(target: TpuTarget) -> list[str]:
    flags = {"spot": ["--spot"], "reserved": ["--reserved"], "on-demand": []}
    if target.provisioning not in flags:
        raise TpuError(
            f"config error: training.tpu.provisioning is {target.provisioning!r}; expected one of 'spot', 'on-demand', 'reserved'"
        )
    return [
        GCLOUD,
        "compute",
        "tpus",
        "queued-resources",
        "create",
        target.name,
        "--node-id",
        target.name,
        *target.scope(),
        "--accelerator-type",
        target.accelerator_type,
        "--runtime-version",
        target.runtime_version,
        *flags[target.provisioning],
    ]


def describe_args(target: TpuTarget) -> list[str]:
    return [GCLOUD, "compute", "tpus", "queued-resources", "describe", target.name, *target.scope(), "--format=json"]


def delete_args(target: TpuTarget) -> list[str]:
    # --force also deletes the TPU VM of an ACTIVE queued resource
    return [GCLOUD, "compute", "tpus", "queued-resources", "delete", target.name, *target.scope(), "--force", "--quiet"]


def ssh_args(target: TpuTarget, command: str, worker: str = "all") -> list[str]:
    return [
        GCLOUD,
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        target.name,
        *target.scope(),
        f"--worker={worker}",
        "--ssh-flag=-oServerAliveInterval=30",
        "--ssh-flag=-oServerAliveCountMax=4",
        f"--command={command}",
    ]


def scp_args(
    target: TpuTarget, sources: Sequence[str], remote_dir: str, *, recurse: bool = False, worker: str = "all"
) -> list[str]:
    return [
        GCLOUD,
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        *sources,
        f"{target.name}:{remote_dir}",
        *target.scope(),
        f"--worker={worker}",
        *(["--recurse"] if recurse else []),
    ]


def provisioning_action(state: str | None) -> str:
    """What to do about a queued resource in ``state`` before training: create, wait, ready or recreate."""
    if state is None:
        return "create"
    if state == "ACTIVE":
        return "ready"
    if state in LOST_STATES:
        return "recreate"
    return "wait"


def outcome_action(returncode: int, state: str | None) -> str:
    """After a gcloud ssh/scp call: done, preempted (slice lost: recreate), dropped (slice ACTIVE: retry) or failed."""
    if returncode == 0:
        return "done"
    if state != "ACTIVE":
        return "preempted"
    if returncode == SSH_DROPPED:
        return "dropped"
    return "failed"


def is_quota_message(message: str) -> bool:
    return any(marker.lower() in message.lower() for marker in QUOTA_MARKERS)


def gcloud_error(stderr: str) -> str:
    """The informative line of gcloud's error output."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("ERROR:"):
            return line
    return lines[-1] if lines else "no error output"


def remote_join(words: Sequence[str]) -> str:
    """One shell command for the workers, every word quoted."""
    return shlex.join([str(word) for word in words])


def setup_command(requirements_name: str, *, python: str, uv_version: str, stamp: str) -> str:
    """Install the training environment in ~/nanogerman/venv once per VM (skipped when the stamp is there)."""
    install = " && ".join(
        [
            remote_join(["python3", "-m", "pip", "install", "--user", "--quiet", f"uv=={uv_version}"]),
            remote_join(["python3", "-m", "uv", "venv", "--python", python, "venv"]),
            remote_join(["python3", "-m", "uv", "pip", "install", "--python", "venv/bin/python", "-r", requirements_name]),
            remote_join(["touch", f"venv/{stamp}"]),
        ]
    )
    return f"cd {REMOTE_ROOT} && ({remote_join(['test', '-f', f'venv/{stamp}'])} || ({install}))"


def launch_command(
    run_dir: str, attempt: str, heartbeat: float, args: Sequence[str], *, module: str = TRAIN_MODULE, env: dict | None = None
) -> str:
    """What every worker runs from ~/nanogerman: tpu_worker.py starts MaxText detached (or finds it running) and returns."""
    assignments = [f"{key}={value}" for key, value in sorted((env or {}).items())]
    return f"cd {REMOTE_ROOT} && " + remote_join(
        [
            "venv/bin/python",
            WORKER_SCRIPT,
            "launch",
            run_dir,
            attempt,
            format(heartbeat, "g"),
            "--",
            "env",
            *assignments,
            "venv/bin/python",
            "-m",
            module,
            *args,
        ]
    )


def stop_command(run_dir: str) -> str:
    """What every worker runs to stop a detached run: SIGTERM to its supervisor, which stops MaxText."""
    return f"cd {REMOTE_ROOT} && " + remote_join(["venv/bin/python", WORKER_SCRIPT, "stop", run_dir])


def environment_stamp(requirements_text: str, python: str, uv_version: str) -> str:
    digest = hashlib.sha256(f"{python}\n{uv_version}\n{requirements_text}".encode()).hexdigest()[:16]
    return f".installed-{digest}"


# --- calls -----------------------------------------------------------------------------------


class QueuedResource:
    """Creates, watches and deletes one queued resource; runs short commands on its workers."""

    def __init__(
        self,
        target: TpuTarget,
        settings: dict,
        *,
        on_line: Callable[[str], None],
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.target = target
        self.settings = settings
        self.on_line = on_line
        self.sleep = sleep
        self.clock = clock
        self.provisioning_failures = 0

    def _call(self, args: list[str]) -> subprocess.CompletedProcess:
        log.info("gcloud: %s", shlex.join(args))
        try:
            return subprocess.run(args, capture_output=True, text=True, errors="replace")
        except FileNotFoundError:
            raise TpuError(
                "gcloud not found on PATH; install the Google Cloud CLI (https://cloud.google.com/sdk) and log in"
            ) from None

    def state(self) -> tuple[str | None, str]:
        """(state, failure message); state None when the queued resource does not exist."""
        result = self._call(describe_args(self.target))
        if result.returncode != 0:
            if "NOT_FOUND" in result.stderr or "not found" in result.stderr.lower():
                return None, ""
            raise TpuError(f"gcloud could not describe queued resource {self.target.name}: {gcloud_error(result.stderr)}")
        try:
            data = json.loads(result.stdout)
        except json.JSONDecodeError:
            raise TpuError(f"gcloud describe {self.target.name}: unreadable output {result.stdout[:200]!r}") from None
        state = data.get("state") or {}
        failed = ((state.get("failedData") or {}).get("error") or {}).get("message", "")
        return state.get("state"), failed

    def create(self) -> None:
        result = self._call(create_args(self.target))
        if result.returncode == 0:
            return
        message = gcloud_error(result.stderr)
        if is_quota_message(message):
            raise QuotaError(self._quota_text(message))
        raise TpuError(
            f"could not create queued resource {self.target.name} ({self.target.accelerator_type} in {self.target.zone}): {message}"
        )

    def _quota_text(self, message: str) -> str:
        t = self.target
        return (
            f"no quota for {t.provisioning} {t.accelerator_type} in {t.zone} (project {t.project}): {message}; "
            "request quota or choose another zone or accelerator_type"
        )

    def delete(self) -> None:
        result = self._call(delete_args(self.target))
        if result.returncode != 0 and "NOT_FOUND" not in result.stderr:
            log.warning("could not delete queued resource %s: %s", self.target.name, gcloud_error(result.stderr))

    def ensure_active(self) -> bool:
        """Create, reattach to, or replace the queued resource until it is ACTIVE; True if this call created it."""
        deadline = self.clock() + 60 * float(self.settings["wait_timeout_minutes"])
        created = False
        while True:
            state, failure = self.state()
            action = provisioning_action(state)
            if action == "ready":
                return created
            if action == "create":
                self.create()
                created = True
                continue
            if action == "recreate":
                if is_quota_message(failure):
                    self.delete()
                    raise QuotaError(self._quota_text(failure))
                self.provisioning_failures += 1
                if self.provisioning_failures > int(self.settings["max_restarts"]):
                    raise TpuError(
                        f"queued resource {self.target.name} is {state} again after {self.provisioning_failures - 1} "
                        f"recreations: {failure or 'no reason given'}"
                    )
                log.warning(
                    "queued resource %s is %s (%s); deleting and recreating it",
                    self.target.name,
                    state,
                    failure or "no reason given",
                )
                self.delete()
                continue
            if self.clock() > deadline:
                raise TpuError(
                    f"queued resource {self.target.name} still {state} after {self.settings['wait_timeout_minutes']} minutes; "
                    "raise training.tpu.wait_timeout_minutes or choose another zone"
                )
            self.sleep(float(self.settings["poll_seconds"]))

    def remote(self, command: str, *, what: str) -> None:
        """Run a short ``command`` on every worker; raise _Preempted, _Dropped or TpuError unless it succeeded."""
        self._check(run_streaming(ssh_args(self.target, command), on_line=self.on_line), what)

    def copy(self, sources: Sequence[str], remote_dir: str, *, recurse: bool = False, what: str) -> None:
        result = self._call(scp_args(self.target, sources, remote_dir, recurse=recurse))
        for line in (result.stdout + result.stderr).splitlines():
            self.on_line(line)
        self._check(result.returncode, what)

    def _check(self, returncode: int, what: str) -> None:
        if returncode == 0:
            return
        state, _ = self.state()
        action = outcome_action(returncode, state)
        if action == "preempted":
            raise _Preempted(f"{what}: exit code {returncode}, queued resource {state}")
        if action == "dropped":
            raise _Dropped(f"{what}: ssh exit code {returncode}, queued resource still ACTIVE")
        tail = getattr(self.on_line, "error_summary", lambda: "")()
        raise TpuError(f"{what} failed on {self.target.name} with exit code {returncode}" + (f": {tail}" if tail else ""))


# --- launching and watching ------------------------------------------------------------------


@dataclass
class Payload:
    """What a job puts on the workers before launching its command."""

    files: list[str]  # copied into ~/nanogerman/
    folders: dict[str, str]  # local folder -> remote parent folder under ~/nanogerman/
    requirements: str  # local requirements file (copied with files)


@dataclass
class Watch:
    """How often to look, and when a heartbeat is too old."""

    poll_seconds: float
    heartbeat_seconds: float
    stale_seconds: float
    max_restarts: int


def set_up(resource: QueuedResource, payload: Payload) -> None:
    """Copy the payload and tpu_worker.py to every worker and install the environment (skipped where it is)."""
    settings = resource.settings
    requirements_text = Path(payload.requirements).read_text(encoding="utf-8")
    stamp = environment_stamp(requirements_text, settings["python"], settings["uv_version"])
    parents = sorted({REMOTE_ROOT, *(f"{REMOTE_ROOT}/{parent}" for parent in payload.folders.values())})
    resource.remote(remote_join(["mkdir", "-p", *parents]), what="creating ~/nanogerman on the workers")
    resource.copy(
        [*payload.files, payload.requirements, tpu_worker.__file__],
        f"{REMOTE_ROOT}/",
        what="copying the model, the environment spec and tpu_worker.py",
    )
    for folder, parent in sorted(payload.folders.items()):
        resource.copy([folder], f"{REMOTE_ROOT}/{parent}/", recurse=True, what=f"copying {Path(folder).name}")
    resource.remote(
        setup_command(Path(payload.requirements).name, python=settings["python"], uv_version=settings["uv_version"], stamp=stamp),
        what="installing the training environment",
    )


def run_detached(
    resource: QueuedResource,
    folder: tpu_worker.RunFolder,
    payload: Payload,
    args: Sequence[str],
    *,
    watch: Watch,
    keep: bool,
    tail: LineTail,
    clock: Callable[[], float] = time.time,
) -> BackendResult:
    """Launch (or attach to) the run on every worker and watch it to the end; see the module docstring."""
    attempts = preemptions = drops = 0
    streamer = LogStreamer(folder, tail)
    if run_verdict(read_records(folder), now=clock(), stale_seconds=watch.stale_seconds) == "succeeded":
        log.info("run %s already finished on the workers; collecting its log, starting nothing", folder.uri)
        streamer.pump()
        return BackendResult(0, tail, attempts=0)
    launched = False  # training may be running on the slice: only a finished run deletes it
    finished = False
    must_launch = False  # a new slice never runs the training yet, whatever older records say
    try:
        while True:
            must_launch = resource.ensure_active() or must_launch
            try:
                verdict = run_verdict(read_records(folder), now=clock(), stale_seconds=watch.stale_seconds)
                if verdict == "running" and not must_launch:
                    log.info("run %s is running on the workers; attaching", folder.uri)
                elif verdict != "succeeded":
                    set_up(resource, payload)
                    attempts += 1
                    attempt = f"{int(clock() * 1000):015d}"
                    launched = True
                    resource.remote(
                        launch_command(folder.uri, attempt, watch.heartbeat_seconds, args), what="launching the training"
                    )
                must_launch = False
                launched = True
                if verdict != "succeeded":
                    verdict = watch_run(resource, folder, streamer, watch, clock)
                streamer.pump()
                finished = True
                code = 0 if verdict == "succeeded" else _exit_code(read_records(folder))
                return BackendResult(code, tail, attempts=max(attempts, 1), preemptions=preemptions)
            except _Dropped as dropped:
                drops += 1
                if drops > watch.max_restarts:
                    raise TpuError(
                        f"ssh to {resource.target.name} dropped {drops} times (limit training.tpu.max_restarts = "
                        f"{watch.max_restarts}); the run may still be going: rerun the job to re-attach"
                    ) from None
                log.warning("%s; retrying (the slice is still ACTIVE, nothing is deleted)", dropped)
            except _Preempted as preempted:
                preemptions += 1
                must_launch = True
                if preemptions > watch.max_restarts:
                    raise TpuError(
                        f"{resource.target.name} was preempted {preemptions} times (limit training.tpu.max_restarts = "
                        f"{watch.max_restarts}); the last checkpoint is kept, rerun the job to resume"
                    ) from None
                log.warning(
                    "%s preempted (%s); deleting, recreating and resuming (restart %d of at most %d)",
                    resource.target.name,
                    preempted,
                    preemptions,
                    watch.max_restarts,
                )
                resource.delete()
    except KeyboardInterrupt:
        launched = True  # Ctrl-C or SIGTERM: leave the slice as it is, training or queued
        log.warning(
            "stopped watching %s; the training keeps running on %s. Rerun the job to re-attach, or stop it: %s",
            folder.uri,
            resource.target.name,
            stop_hint(resource.target, folder.uri),
        )
        raise
    finally:
        if (finished or not launched) and not keep:
            resource.delete()
        elif launched and not finished:
            log.warning(
                "queued resource %s is left running; stop it with: %s",
                resource.target.name,
                stop_hint(resource.target, folder.uri),
            )


def watch_run(
    resource: QueuedResource, folder: tpu_worker.RunFolder, streamer: LogStreamer, watch: Watch, clock: Callable[[], float]
) -> str:
    """Poll state, records and log until the run succeeded, failed or stopped; raise _Preempted if the slice is lost."""
    since = clock()
    while True:
        resource.sleep(watch.poll_seconds)
        state, _ = resource.state()
        if provisioning_action(state) != "ready":
            raise _Preempted(f"queued resource {state or 'gone'} during training")
        streamer.pump()
        verdict = run_verdict(read_records(folder), now=clock(), stale_seconds=watch.stale_seconds)
        if verdict in ("succeeded", "failed", "stopped"):
            return verdict
        if verdict == "interrupted":
            raise _Dropped(
                "the training on the workers was interrupted (SIGTERM from outside: a maintenance event or a "
                "preemption notice); launching again"
            )
        if verdict == "stale" or (verdict == "none" and clock() - since > watch.stale_seconds):
            raise _Dropped(f"no heartbeat from the workers for {watch.stale_seconds:g} s (run {verdict}); launching again")


def _exit_code(records: list[dict]) -> int:
    codes = [record.get("exit_code") for record in latest_attempt(records) if record["state"] != "succeeded"]
    return next((int(code) for code in codes if isinstance(code, int) and code != 0), 1)


def stop_hint(target: TpuTarget, run_dir: str) -> str:
    return shlex.join(
        [
            sys.executable,
            "-m",
            "nanogerman.tpu",
            "stop",
            target.name,
            "--project",
            target.project,
            "--zone",
            target.zone,
            "--run-dir",
            run_dir,
        ]
    )


# --- the backend entry points used by nanogerman.training ------------------------------------


def _requirements_path(settings: dict) -> str:
    path = Path(settings["requirements"])
    path = path if path.is_absolute() else PROJECT_ROOT / path
    if not path.is_file():
        raise TrainingError(f"training.tpu.requirements: {path} not found (the pinned environment for the TPU workers)")
    return str(path)


def check_dataset_reachable(inputs: RunInputs) -> None:
    data = inputs.dataset["maxtext"]
    locations = [value for key, value in data.items() if key in ("dataset_path", "grain_train_files") and value]
    local = [location for location in locations if not str(location).startswith("gs://")]
    if local:
        raise TrainingError(
            f"{inputs.dataset_manifest}: the dataset is at {local[0]}, which TPU workers cannot read; "
            "set dataset.publish_to to a gs://bucket/prefix and rerun the dataset stage"
        )


def _watch(settings: dict) -> Watch:
    return Watch(
        float(settings["poll_seconds"]),
        float(settings["heartbeat_seconds"]),
        60 * float(settings["stale_minutes"]),
        int(settings["max_restarts"]),
    )


def _drive(
    plan: RunPlan, settings: dict, run_dir: str, payload: Payload, args: Sequence[str], tail: LineTail, *, keep: bool
) -> BackendResult:
    resource = QueuedResource(TpuTarget.from_settings(settings), settings, on_line=tail)
    with controller_lock(run_dir, plan.name):
        result = run_detached(
            resource, tpu_worker.RunFolder(run_dir), payload, args, watch=_watch(settings), keep=keep, tail=tail
        )
    result.details = {
        "queued_resource": resource.target.name,
        "zone": resource.target.zone,
        "run_dir": run_dir,
        "restores": tail.restores,
        "provisioning": resource.target.provisioning,
    }
    return result


def run_training_on_tpu(
    plan: RunPlan, inputs: RunInputs, *, results_dir: str | Path, base_output_directory: str
) -> tuple[JobContext, BackendResult]:
    """The tpu backend of :func:`nanogerman.training.train_run`."""
    check_dataset_reachable(inputs)
    settings = plan.tpu
    tokenizer_name = Path(inputs.tokenizer_dir).name
    context = prepare_job(
        plan,
        inputs,
        base_output_directory=base_output_directory,
        results_dir=results_dir,
        tokenizer_path=f"tokenizers/{tokenizer_name}",
        model_path=Path(inputs.model_path).name,
    )
    context.state_dir.mkdir(parents=True, exist_ok=True)
    # rebuilt from the workers' whole log, training and eval lines as on the local backend; a step or an
    # evaluation logged again (a resumed attempt, a re-attached job) is one record in metrics.jsonl (merge_metrics)
    context.raw_metrics.unlink(missing_ok=True)
    log_metrics_path(context.raw_metrics).unlink(missing_ok=True)
    tail = LineTail(extra=LogRecorder(log_metrics_path(context.raw_metrics)))
    payload = Payload(
        files=[inputs.model_path], folders={inputs.tokenizer_dir: "tokenizers"}, requirements=_requirements_path(settings)
    )
    run_dir = f"{base_output_directory.rstrip('/')}/{context.run_name}"
    result = _drive(plan, settings, run_dir, payload, context.args, tail, keep=bool(settings["keep"]))
    result.resumed_from_step = tail.restored_step
    return context, result


def run_smoke_on_tpu(
    plan: RunPlan, *, results_dir: str | Path, base_output_directory: str, run_name: str, steps: int
) -> tuple[BackendResult, list[dict]]:
    """The synthetic-data demo on the run's slice; leaves the slice up for the runs unless keep_after_smoke is false."""
    settings = plan.tpu
    args = smoke_args(
        plan, model_path=Path(plan.model_path).name, run_name=run_name, base_output_directory=base_output_directory, steps=steps
    )
    recorder = Path(results_dir).resolve() / "checkpoints" / run_name / "metrics.raw.jsonl"
    recorder.unlink(missing_ok=True)
    tail = LineTail(extra=StepRecorder(recorder))
    payload = Payload(files=[plan.model_path], folders={}, requirements=_requirements_path(settings))
    # run_name is the same for every smoke job of a target: its records live under a hash of its arguments,
    # so a changed model or batch shape runs again while a rerun of the same one collects the finished run
    digest = hashlib.sha256("\n".join(args).encode("utf-8")).hexdigest()[:8]
    run_dir = f"{base_output_directory.rstrip('/')}/{run_name}/{digest}"
    result = _drive(plan, settings, run_dir, payload, args, tail, keep=bool(settings["keep_after_smoke"]))
    return result, dedupe_steps(read_jsonl(recorder))


# --- command line: regenerate the workers' requirements, stop a detached run -------------------


def stop_run(target: TpuTarget, run_dir: str | None, *, keep_slice: bool) -> None:
    """Stop the detached training on every worker (records say 'stopped'), then delete the queued resource."""
    resource = QueuedResource(target, {"wait_timeout_minutes": 0, "max_restarts": 0, "poll_seconds": 0}, on_line=print)
    state, _ = resource.state()
    if state == "ACTIVE" and run_dir:
        returncode = run_streaming(ssh_args(target, stop_command(run_dir)), on_line=print)
        if returncode != 0:
            log.warning("stopping the run on the workers exited with code %d", returncode)
    if not keep_slice and state is not None:
        resource.delete()


def main(argv: list[str]) -> int:
    if not argv:  # regenerate envs/tpu-requirements.txt
        print(
            tpu_requirements(
                (PROJECT_ROOT / "requirements.lock").read_text(encoding="utf-8"),
                (PROJECT_ROOT / "envs" / "maxtext-runtime.txt").read_text(encoding="utf-8"),
            ),
            end="",
        )
        return 0
    parser = argparse.ArgumentParser(prog="python -m nanogerman.tpu", description="Stop a detached tpu run and delete its slice.")
    commands = parser.add_subparsers(dest="command", required=True)
    stop = commands.add_parser("stop", help="stop the training on every worker, then delete the queued resource")
    stop.add_argument("queued_resource", help="the queued resource's name (in the job's log and train.json's backend_details)")
    stop.add_argument("--project", required=True)
    stop.add_argument("--zone", required=True)
    stop.add_argument("--run-dir", help="<checkpoint_dir>/<run_name> of the run (without it the slice is only deleted)")
    stop.add_argument("--keep-slice", action="store_true", help="stop the training but leave the queued resource")
    options = parser.parse_args(argv)
    target = TpuTarget(options.queued_resource, options.project, options.zone, "", "")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        stop_run(target, options.run_dir, keep_slice=options.keep_slice)
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
