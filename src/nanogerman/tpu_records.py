"""The controller's view of a detached tpu run: the workers' status records, their log chunks, one controller per run.

The records and chunks are written by :mod:`nanogerman.tpu_worker` on the workers into
``<checkpoint_dir>/<run_name>/``; :mod:`nanogerman.tpu_run` decides from them whether to launch,
attach or only collect a finished run.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from nanogerman import tpu_worker
from nanogerman.errors import StageError


class TpuError(StageError):
    """A Cloud TPU call failed in a way that retrying will not fix; the message names the resource."""


# --- the run folder: status records and log chunks ---------------------------------------------


def latest_attempt(records: list[dict]) -> list[dict]:
    """The records of the newest attempt (attempt ids sort by time); older attempts' workers are gone."""
    if not records:
        return []
    newest = max(str(record.get("attempt", "")) for record in records)
    return [record for record in records if str(record.get("attempt", "")) == newest]


def _age_seconds(record: dict, now: float) -> float:
    try:
        updated = datetime.strptime(record["updated"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (KeyError, TypeError, ValueError):
        return float("inf")
    return now - updated


def run_verdict(records: list[dict], *, now: float, stale_seconds: float) -> str:
    """What the latest attempt's records say: none, succeeded, failed, stopped, interrupted, running or stale (heartbeat too old)."""
    latest = latest_attempt(records)
    if not latest:
        return "none"
    states = {record["state"] for record in latest}
    if "failed" in states:
        return "failed"
    if "stopped" in states:
        return "stopped"
    if "interrupted" in states:
        return "interrupted"
    if states == {"succeeded"}:
        return "succeeded"
    running = [record for record in latest if record["state"] == "running"]
    if all(_age_seconds(record, now) > stale_seconds for record in running):
        return "stale"
    return "running"


class LogStreamer:
    """Passes the lines of the workers' log chunks to ``on_line``, each chunk once, in order (one worker's log)."""

    def __init__(self, folder: tpu_worker.RunFolder, on_line: Callable[[str], None]):
        self.folder = folder
        self.on_line = on_line
        self.seen: set[str] = set()

    def pump(self) -> None:
        workers = self.folder.list("log")
        if not workers:
            return
        worker = workers[0]  # every worker prints the same step lines; worker 0 sorts first
        for name in self.folder.list(f"log/{worker}"):
            if name in self.seen:
                continue
            self.seen.add(name)
            for line in self.folder.read_text(f"log/{worker}/{name}").splitlines():
                self.on_line(line)


def read_records(folder: tpu_worker.RunFolder) -> list[dict]:
    try:
        return folder.records()
    except tpu_worker.RecordError as error:
        raise TpuError(str(error)) from None


# --- one controller per run ----------------------------------------------------------------


def lock_path(run_dir: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "nanogerman" / "runs" / f"{hashlib.sha256(run_dir.encode('utf-8')).hexdigest()[:16]}.lock"


@contextmanager
def controller_lock(run_dir: str, run: str) -> Iterator[None]:
    """Hold the run's lock on this machine; a second controller of the same run stops with the holder's pid and host."""
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise TpuError(
                f"run {run} ({run_dir}) is already watched by {holder} (lock {path}); wait for that job, or stop it, then rerun"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
