"""The ``tpu`` training backend: Cloud TPU queued resources driven through ``gcloud``.

For each job: create the queued resource (or reattach to one that is already there),
wait until it is ACTIVE, copy the model file, the tokenizer and the pinned
environment spec (``envs/tpu-requirements.txt``) to every worker, install the
environment once per VM, and run the same MaxText command on all workers with
``gcloud compute tpus tpu-vm ssh --worker=all``, streaming its output into the job's
log. If the slice is preempted (the queued resource turns SUSPENDED or FAILED, or the
ssh session drops), it is deleted and recreated and MaxText is started again with
the same ``run_name``: it resumes from the last checkpoint in the gs:// run folder.
At the end the queued resource is deleted unless ``training.tpu.keep`` is set.

Every ``gcloud`` call is an argument list (no local shell). The command that runs
on the workers goes through their login shell, so it is assembled with
:func:`shlex.quote` around every value that comes from the config or a path.

The argument builders and the two decision functions (:func:`provisioning_action`,
:func:`outcome_action`) are pure; :class:`QueuedResource` performs the calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from nanogerman.errors import StageError
from nanogerman.job import (
    PROJECT_ROOT, TRAIN_MODULE, BackendResult, JobContext, LineTail, RunInputs, RunPlan, TrainingError, prepare_job,
    run_streaming, safe_name, smoke_args,
)
from nanogerman.metrics import StepRecorder, dedupe_steps, read_jsonl

log = logging.getLogger(__name__)

GCLOUD = "gcloud"
REMOTE_ROOT = "nanogerman"  # on each worker, relative to the ssh user's home
DEFAULTS: dict[str, Any] = {
    "provisioning": "spot",
    "name_prefix": "nanogerman",
    "keep": False,
    "keep_after_smoke": True,
    "poll_seconds": 30,
    "wait_timeout_minutes": 1440,
    "max_restarts": 20,
    "requirements": "envs/tpu-requirements.txt",
    "python": "3.12",
    "uv_version": "0.13.8",
}
WAITING_STATES = frozenset({"CREATING", "ACCEPTED", "PROVISIONING", "WAITING_FOR_RESOURCES", "DELETING"})
LOST_STATES = frozenset({"SUSPENDING", "SUSPENDED", "FAILED"})
SSH_DROPPED = 255  # ssh's own exit code when the connection fails or drops
QUOTA_MARKERS = ("quota", "RESOURCE_EXHAUSTED")


class TpuError(StageError):
    """A Cloud TPU call failed in a way that retrying will not fix; the message names the resource."""


class QuotaError(TpuError):
    """The project has no quota for the requested slice."""


class _Preempted(Exception):
    """The slice went away during setup or training (internal: triggers delete and recreate)."""


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
    def from_settings(cls, tpu: dict) -> "TpuTarget":
        settings = {**DEFAULTS, **tpu}
        name = safe_name(f"{settings['name_prefix']}-{settings['accelerator_type']}-{settings['zone']}")[:63].rstrip("-")
        return cls(name, str(settings["project"]), str(settings["zone"]), str(settings["accelerator_type"]),
                   str(settings["runtime_version"]), str(settings["provisioning"]))

    def scope(self) -> list[str]:
        return ["--project", self.project, "--zone", self.zone]


def create_args(target: TpuTarget) -> list[str]:
    flags = {"spot": ["--spot"], "reserved": ["--reserved"], "on-demand": []}
    if target.provisioning not in flags:
        raise TpuError(f"config error: training.tpu.provisioning is {target.provisioning!r}; expected one of 'spot', 'on-demand', 'reserved'")
    return [
        GCLOUD, "compute", "tpus", "queued-resources", "create", target.name, "--node-id", target.name, *target.scope(),
        "--accelerator-type", target.accelerator_type, "--runtime-version", target.runtime_version,
        *flags[target.provisioning],
    ]


def describe_args(target: TpuTarget) -> list[str]:
    return [GCLOUD, "compute", "tpus", "queued-resources", "describe", target.name, *target.scope(), "--format=json"]


def delete_args(target: TpuTarget) -> list[str]:
    # --force also deletes the TPU VM of an ACTIVE queued resource
    return [GCLOUD, "compute", "tpus", "queued-resources", "delete", target.name, *target.scope(), "--force", "--quiet"]


def ssh_args(target: TpuTarget, command: str, worker: str = "all") -> list[str]:
    return [
        GCLOUD, "compute", "tpus", "tpu-vm", "ssh", target.name, *target.scope(), f"--worker={worker}",
        "--ssh-flag=-oServerAliveInterval=30", "--ssh-flag=-oServerAliveCountMax=4", f"--command={command}",
    ]


def scp_args(target: TpuTarget, sources: Sequence[str], remote_dir: str, *, recurse: bool = False, worker: str = "all") -> list[str]:
    return [
        GCLOUD, "compute", "tpus", "tpu-vm", "scp", *sources, f"{target.name}:{remote_dir}", *target.scope(),
        f"--worker={worker}", *(["--recurse"] if recurse else []),
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
    """After a remote command: done, preempted (slice gone or ssh dropped: recreate and resume) or failed."""
    if returncode == 0:
        return "done"
    if state != "ACTIVE":
        return "preempted"
    if returncode == SSH_DROPPED:
        return "preempted"
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
    install = " && ".join([
        remote_join(["python3", "-m", "pip", "install", "--user", "--quiet", f"uv=={uv_version}"]),
        remote_join(["python3", "-m", "uv", "venv", "--python", python, "venv"]),
        remote_join(["python3", "-m", "uv", "pip", "install", "--python", "venv/bin/python", "-r", requirements_name]),
        remote_join(["touch", f"venv/{stamp}"]),
    ])
    return f"cd {REMOTE_ROOT} && ({remote_join(['test', '-f', f'venv/{stamp}'])} || ({install}))"


def train_command(args: Sequence[str], *, module: str = TRAIN_MODULE, env: dict | None = None) -> str:
    """The MaxText command every worker runs, from ~/nanogerman."""
    assignments = [f"{key}={value}" for key, value in sorted((env or {}).items())]
    return f"cd {REMOTE_ROOT} && " + remote_join(["env", *assignments, "venv/bin/python", "-m", module, *args])


def environment_stamp(requirements_text: str, python: str, uv_version: str) -> str:
    digest = hashlib.sha256(f"{python}\n{uv_version}\n{requirements_text}".encode("utf-8")).hexdigest()[:16]
    return f".installed-{digest}"


# --- the pinned environment for TPU workers --------------------------------------------------

# Packages of requirements.lock that only the workflow's other stages (or the tests) use.
NOT_ON_WORKERS = (
    "torch", "triton", "nvidia-", "cuda-", "lm_eval", "lm-eval", "snakemake", "snakemake-", "pytest", "execnet", "gcp-storage-emulator",
    "matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "accelerate", "peft", "evaluate", "sacrebleu",
    "rouge_score", "sqlitedict", "word2number", "pytablewriter", "DataProperty", "mbstrdecoder", "pathvalidate",
    "tabledata", "tcolorpy", "typepy", "rustbpe", "tiktoken", "blobfile", "conda-inject", "connection_pool", "yte",
    "throttler", "reretry", "dpath", "ConfigArgParse", "argparse-dataclass", "smart_open", "pulp", "immutables",
    "nbformat", "jupyter_core", "traitlets", "fastjsonschema", "cheroot", "coverage", "hypothesis",
)


def _dropped(name: str) -> bool:
    """Whether a package is left off the workers (an entry ending in '-' is a prefix)."""
    lower = name.lower()
    return any(lower.startswith(drop.lower()) if drop.endswith("-") else lower == drop.lower() for drop in NOT_ON_WORKERS)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def tpu_requirements(lock_text: str, runtime_text: str) -> str:
    """envs/tpu-requirements.txt: requirements.lock's pins, less what workers never import.

    Nothing MaxText itself needs (``envs/maxtext-runtime.txt``) is ever left out.
    """
    runtime = {_normalized(re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0])
               for line in runtime_text.splitlines() if line.strip() and not line.strip().startswith("#")}
    kept = []
    for line in lock_text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split("==", 1)[0]
        if _normalized(name) in runtime or not _dropped(name):
            kept.append(line)
    header = (
        "# Pinned environment for Cloud TPU workers (MaxText training only): requirements.lock without the\n"
        "# packages only other stages use (torch, CUDA, lm-eval, snakemake, …). MaxText's runtime dependencies\n"
        "# (envs/maxtext-runtime.txt) are all pinned here, libtpu included. Generated by nanogerman.tpu.tpu_requirements;\n"
        "# regenerate after changing the lock: .venv/bin/python -m nanogerman.tpu > envs/tpu-requirements.txt\n"
    )
    return header + "\n".join(kept) + "\n"


# --- calls -----------------------------------------------------------------------------------


class QueuedResource:
    """Creates, watches and deletes one queued resource; runs commands on its workers."""

    def __init__(self, target: TpuTarget, settings: dict, *, on_line: Callable[[str], None],
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.target = target
        self.settings = {**DEFAULTS, **settings}
        self.on_line = on_line
        self.sleep = sleep
        self.clock = clock
        self.provisioning_failures = 0

    def _call(self, args: list[str]) -> subprocess.CompletedProcess:
        log.info("gcloud: %s", shlex.join(args))
        try:
            return subprocess.run(args, capture_output=True, text=True, errors="replace")
        except FileNotFoundError:
            raise TpuError("gcloud not found on PATH; install the Google Cloud CLI (https://cloud.google.com/sdk) and log in") from None

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
        raise TpuError(f"could not create queued resource {self.target.name} ({self.target.accelerator_type} in {self.target.zone}): {message}")

    def _quota_text(self, message: str) -> str:
        t = self.target
        return (f"no quota for {t.provisioning} {t.accelerator_type} in {t.zone} (project {t.project}): {message}; "
                "request quota or choose another zone or accelerator_type")

    def delete(self) -> None:
        result = self._call(delete_args(self.target))
        if result.returncode != 0 and "NOT_FOUND" not in result.stderr:
            log.warning("could not delete queued resource %s: %s", self.target.name, gcloud_error(result.stderr))

    def ensure_active(self) -> None:
        """Create, reattach to, or replace the queued resource until it is ACTIVE."""
        deadline = self.clock() + 60 * float(self.settings["wait_timeout_minutes"])
        while True:
            state, failure = self.state()
            action = provisioning_action(state)
            if action == "ready":
                return
            if action == "create":
                self.create()
                continue
            if action == "recreate":
                if is_quota_message(failure):
                    self.delete()
                    raise QuotaError(self._quota_text(failure))
                self.provisioning_failures += 1
                if self.provisioning_failures > int(self.settings["max_restarts"]):
                    raise TpuError(f"queued resource {self.target.name} is {state} again after {self.provisioning_failures - 1} "
                                   f"recreations: {failure or 'no reason given'}")
                log.warning("queued resource %s is %s (%s); deleting and recreating it", self.target.name, state, failure or "no reason given")
                self.delete()
                continue
            if self.clock() > deadline:
                raise TpuError(f"queued resource {self.target.name} still {state} after {self.settings['wait_timeout_minutes']} minutes; "
                               "raise training.tpu.wait_timeout_minutes or choose another zone")
            self.sleep(float(self.settings["poll_seconds"]))

    def remote(self, command: str, *, what: str) -> None:
        """Run ``command`` on every worker; raise _Preempted if the slice went away, TpuError if the command failed."""
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
        if outcome_action(returncode, state) == "preempted":
            raise _Preempted(f"{what}: exit code {returncode}, queued resource {state}")
        tail = getattr(self.on_line, "error_summary", lambda: "")()
        raise TpuError(f"{what} failed on {self.target.name} with exit code {returncode}" + (f": {tail}" if tail else ""))


@dataclass
class Payload:
    """What a job puts on the workers before running its command."""

    files: list[str]            # copied into ~/nanogerman/
    folders: dict[str, str]     # local folder -> remote parent folder under ~/nanogerman/
    requirements: str           # local requirements file (copied with files)


def run_with_preemption(resource: QueuedResource, payload: Payload, command: str, *, keep: bool,
                        max_restarts: int) -> BackendResult:
    """Provision, set up, run ``command`` on all workers; recreate and rerun after each preemption."""
    tail = resource.on_line
    attempts = preemptions = 0
    requirements_text = Path(payload.requirements).read_text(encoding="utf-8")
    stamp = environment_stamp(requirements_text, resource.settings["python"], resource.settings["uv_version"])
    try:
        while True:
            resource.ensure_active()
            attempts += 1
            try:
                parents = sorted({REMOTE_ROOT, *(f"{REMOTE_ROOT}/{parent}" for parent in payload.folders.values())})
                resource.remote(remote_join(["mkdir", "-p", *parents]), what="creating ~/nanogerman on the workers")
                resource.copy([*payload.files, payload.requirements], f"{REMOTE_ROOT}/", what="copying the model and environment spec")
                for folder, parent in sorted(payload.folders.items()):
                    resource.copy([folder], f"{REMOTE_ROOT}/{parent}/", recurse=True, what=f"copying {Path(folder).name}")
                resource.remote(setup_command(Path(payload.requirements).name, python=resource.settings["python"],
                                              uv_version=resource.settings["uv_version"], stamp=stamp),
                                what="installing the training environment")
                returncode = run_streaming(ssh_args(resource.target, command), on_line=tail)
                if returncode == 0:
                    return BackendResult(0, tail, attempts=attempts, preemptions=preemptions)
                state, _ = resource.state()
                if outcome_action(returncode, state) == "failed":
                    return BackendResult(returncode, tail, attempts=attempts, preemptions=preemptions)
                raise _Preempted(f"training: exit code {returncode}, queued resource {state}")
            except _Preempted as preempted:
                preemptions += 1
                if preemptions > max_restarts:
                    raise TpuError(f"{resource.target.name} was preempted {preemptions} times (limit training.tpu.max_restarts = "
                                   f"{max_restarts}); the last checkpoint is kept, rerun the job to resume") from None
                log.warning("%s preempted (%s); deleting, recreating and resuming (restart %d of at most %d)",
                            resource.target.name, preempted, preemptions, max_restarts)
                resource.delete()
    finally:
        if not keep:
            resource.delete()


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


def run_training_on_tpu(plan: RunPlan, inputs: RunInputs, *, training: dict, results_dir: str | Path,
                        base_output_directory: str) -> tuple[JobContext, BackendResult]:
    """The tpu backend of :func:`nanogerman.training.train_run`."""
    check_dataset_reachable(inputs)
    settings = {**DEFAULTS, **(training.get("tpu") or {}), **(plan.tpu or {})}
    tokenizer_name = Path(inputs.tokenizer_dir).name
    context = prepare_job(
        plan, inputs, base_output_directory=base_output_directory, results_dir=results_dir,
        tokenizer_path=f"tokenizers/{tokenizer_name}", model_path=Path(inputs.model_path).name,
    )
    context.state_dir.mkdir(parents=True, exist_ok=True)
    tail = LineTail(extra=StepRecorder(context.raw_metrics))
    resource = QueuedResource(TpuTarget.from_settings(settings), settings, on_line=tail)
    payload = Payload(files=[inputs.model_path], folders={inputs.tokenizer_dir: "tokenizers"},
                      requirements=_requirements_path(settings))
    result = run_with_preemption(resource, payload, train_command(context.args), keep=bool(settings["keep"]),
                                 max_restarts=int(settings["max_restarts"]))
    result.resumed_from_step = tail.restored_step
    result.details = {"queued_resource": resource.target.name, "zone": resource.target.zone,
                      "restores": tail.restores, "provisioning": resource.target.provisioning}
    return context, result


def run_smoke_on_tpu(plan: RunPlan, *, training: dict, results_dir: str | Path, base_output_directory: str,
                     run_name: str, steps: int) -> tuple[BackendResult, list[dict]]:
    """The synthetic-data demo on the run's slice; leaves the slice up for the runs unless keep_after_smoke is false."""
    settings = {**DEFAULTS, **(training.get("tpu") or {}), **(plan.tpu or {})}
    args = smoke_args(plan, model_path=Path(plan.model_path).name, run_name=run_name,
                      base_output_directory=base_output_directory, steps=steps)
    recorder = Path(results_dir).resolve() / "checkpoints" / run_name / "metrics.raw.jsonl"
    recorder.unlink(missing_ok=True)
    tail = LineTail(extra=StepRecorder(recorder))
    resource = QueuedResource(TpuTarget.from_settings(settings), settings, on_line=tail)
    payload = Payload(files=[plan.model_path], folders={}, requirements=_requirements_path(settings))
    result = run_with_preemption(resource, payload, train_command(args), keep=bool(settings["keep_after_smoke"]),
                                 max_restarts=int(settings["max_restarts"]))
    return result, dedupe_steps(read_jsonl(recorder))


if __name__ == "__main__":  # regenerate envs/tpu-requirements.txt
    print(tpu_requirements((PROJECT_ROOT / "requirements.lock").read_text(encoding="utf-8"),
                           (PROJECT_ROOT / "envs" / "maxtext-runtime.txt").read_text(encoding="utf-8")), end="")
