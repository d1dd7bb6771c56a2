"""The part of a tpu run that lives on each TPU worker: start MaxText detached, supervise it, record its state.

:mod:`nanogerman.tpu_run` copies this file to ``~/nanogerman/`` on every worker and runs it there
with the workers' environment (``venv/bin/python tpu_worker.py …``). It imports only the
standard library (and gcsfs, already in ``envs/tpu-requirements.txt``, for a ``gs://`` run
folder), never the rest of nanogerman; the controller imports it for :class:`RunFolder` and
:func:`parse_record`, so the record format has one definition.

Why detached this way: ``launch`` starts ``supervise`` with ``start_new_session=True``
(``setsid``: a new session and process group, no controlling terminal), stdin from
/dev/null and its output in a file, and returns at once. The ssh session that ran it can
end or drop; sshd's SIGHUP goes to the session's own process group, not to ours, and
nothing writes to the closed connection. This needs no root (a systemd unit does, or
lingering for ``systemd-run --user``) and, unlike a queued resource's startup script, it
can be started again on a live slice; it is also what the tests can run for real.

The run folder is ``<checkpoint_dir>/<run_name>/`` (beside MaxText's ``checkpoints/``):

- ``status/<worker>.json``: ``state`` (running, succeeded, failed, stopped by ``stop``, or
  interrupted by a SIGTERM from elsewhere, e.g. the VM shutting down), ``step`` (last
  completed), ``checkpoint_step``, ``exit_code``, ``started``, ``updated`` (heartbeat),
  ``worker``, ``hostname``, ``pid``, ``attempt``; rewritten every ``--heartbeat`` seconds.
- ``log/<worker>/<attempt>-<n>.txt``: MaxText's output in chunks, one per heartbeat, so
  the controller can stream it into the job's log without re-reading days of output. A chunk is
  also written right after each checkpoint line (a save, or the start of an asynchronous one)
  and on SIGTERM; lines printed between the last chunk and a sudden loss of the VM are lost
  (their steps may be retrained after the resume).

The worker's own copy of its state is ``~/nanogerman/runs/<run_name>/`` (pid file and the
full log). Commands::

    launch RUN_DIR ATTEMPT HEARTBEAT -- COMMAND...   start COMMAND detached unless this worker runs it already
    supervise RUN_DIR ATTEMPT HEARTBEAT -- COMMAND... (what launch starts) run COMMAND and keep the records
    stop RUN_DIR                                      SIGTERM to this worker's supervisor, then wait until it is gone (state 'stopped')
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

STATES = ("running", "succeeded", "failed", "stopped", "interrupted")
STEP = re.compile(r"completed step: (\d+)")
# a synchronous save, or the start of an asynchronous one (as nanogerman.job.CHECKPOINT_LINE; this file imports only the standard library)
CHECKPOINT = re.compile(r"(?:Saved a checkpoint at|Started an asynchronous checkpoint save for) step (\d+)")
KILL_AFTER_SECONDS = 120  # a MaxText that ignores SIGTERM this long (stuck in a collective) gets SIGKILL
LOCAL_ROOT = Path("runs")  # relative to ~/nanogerman, where the ssh command starts
METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number"


class RecordError(Exception):
    """A status record in the run folder cannot be read; the message names the object."""


# --- the run folder (local path or gs://) ------------------------------------------------------


def _gcs():
    """gcsfs for gs:// run folders (the worker's service account, or STORAGE_EMULATOR_HOST in tests)."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import gcsfs

    if emulator:
        return gcsfs.GCSFileSystem(endpoint_url=emulator, token="anon", skip_instance_cache=True)
    return gcsfs.GCSFileSystem(skip_instance_cache=True)


class RunFolder:
    """``<checkpoint_dir>/<run_name>/``: status records and log chunks, on a local folder or in a bucket."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.remote = self.uri.startswith("gs://")
        self._fs = _gcs() if self.remote else None

    def path(self, relative: str) -> str:
        return f"{self.uri}/{relative}"

    def write_text(self, relative: str, text: str) -> None:
        """Whole-object write: a gs:// object appears at once; a local file is renamed into place."""
        target = self.path(relative)
        if self.remote:
            self._fs.pipe(target, text.encode("utf-8"))
            return
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)

    def read_text(self, relative: str) -> str:
        if self.remote:
            return self._fs.cat(self.path(relative)).decode("utf-8", errors="replace")
        return Path(self.path(relative)).read_text(encoding="utf-8", errors="replace")

    def list(self, relative: str) -> list[str]:
        """Names (not paths) of the objects directly under ``relative``, sorted; [] when there are none."""
        if self.remote:
            try:
                found = self._fs.ls(self.path(relative), detail=False, refresh=True)
            except FileNotFoundError:
                return []
            return sorted(name.rstrip("/").rsplit("/", 1)[-1] for name in found)
        folder = Path(self.path(relative))
        return sorted(child.name for child in folder.iterdir() if not child.name.startswith(".")) if folder.is_dir() else []

    def records(self) -> list[dict]:
        """Every worker's status record (all attempts)."""
        return [
            parse_record(self.read_text(f"status/{name}"), self.path(f"status/{name}"))
            for name in self.list("status")
            if name.endswith(".json")
        ]


def parse_record(text: str, where: str) -> dict:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordError(
            f"{where}: unreadable status record ({error.msg}); delete it and rerun the job (the workers rewrite it)"
        ) from None
    if not isinstance(record, dict) or record.get("state") not in STATES or not isinstance(record.get("worker"), str):
        raise RecordError(
            f"{where}: not a status record (expected 'state' in {', '.join(STATES)} and 'worker'); "
            "delete it and rerun the job (the workers rewrite it)"
        )
    return record


# --- this worker ---------------------------------------------------------------------------------


def worker_id() -> str:
    """TPU_WORKER_ID if set, else the VM's agent-worker-number (metadata server), else the hostname."""
    if os.environ.get("TPU_WORKER_ID"):
        return os.environ["TPU_WORKER_ID"]
    try:
        request = urllib.request.Request(METADATA, headers={"Metadata-Flavor": "Google"})
        with urllib.request.urlopen(request, timeout=2) as answer:
            return answer.read().decode().strip()
    except OSError:
        return socket.gethostname()


def local_dir(run_dir: str) -> Path:
    folder = LOCAL_ROOT / run_dir.rstrip("/").rsplit("/", 1)[-1]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def running_pid(folder: Path) -> int | None:
    """The supervisor's pid if it is alive (and is a supervisor, not a reused pid)."""
    try:
        pid = int((folder / "supervisor.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"supervise" in cmdline else None


def launch(run_dir: str, attempt: str, heartbeat: str, command: list[str]) -> int:
    """Start ``supervise`` in its own session unless it already runs here; print one line, return at once."""
    folder = local_dir(run_dir)
    with open(folder / "launch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two launches at once on this worker: the second sees the first's pid
        pid = running_pid(folder)
        if pid is not None:
            _note(folder, f"already running (pid {pid})")
            return 0
        with open(folder / "supervisor.out", "ab") as out:
            process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "supervise", run_dir, attempt, heartbeat, "--", *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        (folder / "supervisor.pid").write_text(str(process.pid))
    _note(folder, f"started (pid {process.pid}, attempt {attempt})")
    return 0


def _note(folder: Path, what: str) -> None:
    """One line for the controller's log, and the same in the worker's launches.log."""
    line = f"nanogerman-worker {worker_id()}: {what}"
    with open(folder / "launches.log", "a", encoding="utf-8") as handle:
        handle.write(f"{_now()} {line}\n")
    print(line, flush=True)


def stop(run_dir: str) -> int:
    folder = local_dir(run_dir)
    pid = running_pid(folder)
    if pid is None:
        print(f"nanogerman-worker {worker_id()}: not running", flush=True)
        return 0
    (folder / "stop-requested").touch()  # the supervisor records 'stopped', not 'interrupted'
    os.kill(pid, signal.SIGTERM)
    print(f"nanogerman-worker {worker_id()}: stopping (pid {pid})", flush=True)
    # Return only once the supervisor is gone (its record written): the caller deletes the slice next,
    # which would kill it mid-way and leave a record that says 'running'. It SIGKILLs MaxText after
    # KILL_AFTER_SECONDS, so this wait ends.
    deadline = time.monotonic() + KILL_AFTER_SECONDS + 60
    while running_pid(folder) == pid and time.monotonic() < deadline:
        time.sleep(0.1)
    if running_pid(folder) == pid:
        print(f"nanogerman-worker {worker_id()}: still running after {KILL_AFTER_SECONDS + 60} s (pid {pid})", flush=True)
        return 1
    print(f"nanogerman-worker {worker_id()}: stopped (pid {pid})", flush=True)
    return 0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Supervisor:
    """Runs the training command, keeps the worker's log and status record up to date."""

    def __init__(self, run_dir: str, attempt: str, heartbeat: float, command: list[str]):
        self.folder = RunFolder(run_dir)
        self.local = local_dir(run_dir)
        self.attempt, self.heartbeat, self.command = attempt, heartbeat, command
        self.worker = worker_id()
        self.record = {
            "state": "running",
            "step": None,
            "checkpoint_step": None,
            "exit_code": None,
            "started": _now(),
            "updated": _now(),
            "worker": self.worker,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "attempt": attempt,
        }
        self.pending: list[str] = []
        self.chunks = 0
        self.lock = threading.Lock()
        self.wake = threading.Event()  # set after a checkpoint line: upload the log up to it now
        self.terminated = False

    def flush(self) -> None:
        with self.lock:
            lines, self.pending = self.pending, []
            self.record["updated"] = _now()
            record = json.dumps(self.record, sort_keys=True)
        if lines:
            self.chunks += 1
            self.folder.write_text(f"log/{self.worker}/{self.attempt}-{self.chunks:06d}.txt", "".join(lines))
        self.folder.write_text(f"status/{self.worker}.json", record + "\n")

    def read_output(self, stream, log_file) -> None:
        for line in stream:
            log_file.write(line)
            log_file.flush()
            with self.lock:
                self.pending.append(line)
                if (match := STEP.search(line)) is not None:
                    self.record["step"] = int(match.group(1))
                if (match := CHECKPOINT.search(line)) is not None:
                    self.record["checkpoint_step"] = int(match.group(1))
                    self.wake.set()

    def run(self) -> int:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        (self.local / "stop-requested").unlink(missing_ok=True)
        self.flush()
        children: list[subprocess.Popen] = []

        def on_term(signum, frame):  # noqa: ARG001
            self.terminated = True
            for child in children:
                child.terminate()

        # The handler goes in before the child starts: a SIGTERM the launching shell ignored would
        # otherwise be inherited as ignored by MaxText (exec resets only handled signals to default).
        signal.signal(signal.SIGTERM, on_term)
        child = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        children.append(child)
        if self.terminated:  # a stop that came while the child was starting
            child.terminate()
        with open(self.local / "train.log", "a", encoding="utf-8", errors="replace") as log_file:
            output = io.TextIOWrapper(child.stdout, encoding="utf-8", errors="replace")
            reader = threading.Thread(target=self.read_output, args=(output, log_file), daemon=True)
            reader.start()
            term_seen: float | None = None
            while child.poll() is None:
                self.wake.wait(self.heartbeat)
                self.wake.clear()
                self.flush()
                if self.terminated:
                    term_seen = term_seen or time.monotonic()
                    if time.monotonic() - term_seen > KILL_AFTER_SECONDS:
                        child.kill()
            reader.join(timeout=30)
        code = child.returncode
        with self.lock:
            self.record["exit_code"] = code
            if code == 0:
                self.record["state"] = "succeeded"
            elif self.terminated:
                self.record["state"] = "stopped" if (self.local / "stop-requested").exists() else "interrupted"
            else:
                self.record["state"] = "failed"
        self.flush()
        return code


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    words = argv[: argv.index("--")] if "--" in argv else argv
    if words[:1] == ["launch"] and len(words) == 4 and command:
        return launch(words[1], words[2], words[3], command)
    if words[:1] == ["supervise"] and len(words) == 4 and command:
        return Supervisor(words[1], words[2], float(words[3]), command).run()
    if words[:1] == ["stop"] and len(words) == 2:
        return stop(words[1])
    print(__doc__.split("Commands::", 1)[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
