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
See :mod:`nanogerman.tpu_gcloud` for how the ``gcloud`` calls and the workers' commands are built.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nanogerman import tpu_worker
from nanogerman.curves import LogRecorder, log_metrics_path
from nanogerman.job import (
    BackendResult,
    JobContext,
    LineTail,
    RunInputs,
    RunPlan,
    TrainingError,
    prepare_job,
    smoke_args,
)
from nanogerman.metrics import StepRecorder, dedupe_steps, read_jsonl
from nanogerman.provenance import PROJECT_ROOT
from nanogerman.tpu_gcloud import (
    REMOTE_ROOT,
    Dropped,
    Preempted,
    QueuedResource,
    TpuTarget,
    environment_stamp,
    launch_command,
    provisioning_action,
    remote_join,
    setup_command,
)
from nanogerman.tpu_records import LogStreamer, TpuError, controller_lock, latest_attempt, read_records, run_verdict

log = logging.getLogger(__name__)


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
            except Dropped as dropped:
                drops += 1
                if drops > watch.max_restarts:
                    raise TpuError(
                        f"ssh to {resource.target.name} dropped {drops} times (limit training.tpu.max_restarts = "
                        f"{watch.max_restarts}); the run may still be going: rerun the job to re-attach"
                    ) from None
                log.warning("%s; retrying (the slice is still ACTIVE, nothing is deleted)", dropped)
            except Preempted as preempted:
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
    """Poll state, records and log until the run succeeded, failed or stopped; raise Preempted if the slice is lost."""
    since = clock()
    while True:
        resource.sleep(watch.poll_seconds)
        state, _ = resource.state()
        if provisioning_action(state) != "ready":
            raise Preempted(f"queued resource {state or 'gone'} during training")
        streamer.pump()
        verdict = run_verdict(read_records(folder), now=clock(), stale_seconds=watch.stale_seconds)
        if verdict in ("succeeded", "failed", "stopped"):
            return verdict
        if verdict == "interrupted":
            raise Dropped(
                "the training on the workers was interrupted (SIGTERM from outside: a maintenance event or a "
                "preemption notice); launching again"
            )
        if verdict == "stale" or (verdict == "none" and clock() - since > watch.stale_seconds):
            raise Dropped(f"no heartbeat from the workers for {watch.stale_seconds:g} s (run {verdict}); launching again")


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


def requirements_location(settings: dict) -> Path:
    """training.tpu.requirements as a path: a relative one is in the project folder."""
    path = Path(settings["requirements"])
    return path if path.is_absolute() else PROJECT_ROOT / path


def _requirements_path(settings: dict) -> str:
    path = requirements_location(settings)
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
