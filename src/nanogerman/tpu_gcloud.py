"""Cloud TPU queued resources through ``gcloud``: what to create, the argument lists, the remote commands, and the calls.

Every ``gcloud`` call is an argument list (no local shell). The command that runs on the
workers goes through their login shell, so it is assembled with :func:`shlex.quote` around
every value that comes from the config or a path (tests/gcloud_emulator.py runs it in bash).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nanogerman.job import TRAIN_MODULE, run_streaming, safe_name
from nanogerman.tpu_records import TpuError

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


class Preempted(Exception):
    """The slice went away during setup or training (internal: triggers delete and recreate)."""


class Dropped(Exception):
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
    provisioning: str

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
        """Run a short ``command`` on every worker; raise Preempted, Dropped or TpuError unless it succeeded."""
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
            raise Preempted(f"{what}: exit code {returncode}, queued resource {state}")
        if action == "dropped":
            raise Dropped(f"{what}: ssh exit code {returncode}, queued resource still ACTIVE")
        tail = getattr(self.on_line, "error_summary", lambda: "")()
        raise TpuError(f"{what} failed on {self.target.name} with exit code {returncode}" + (f": {tail}" if tail else ""))
