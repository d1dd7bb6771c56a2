"""Scratch folders outside results_dir (the system's temporary folder) that a killed job cannot leave behind for good.

:func:`scratch_dir` names each folder ``nanogerman-<what>-<pid>-<random>``, with the
id of the process that made it, and removes it on exit (an exception, Ctrl-C and
Snakemake's SIGTERM included). Only SIGKILL can leave one behind: at most one per
killed job, since a job makes one at a time. :func:`sweep_stale_scratch`, which
every job runs at its start, removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PREFIX = "nanogerman-"
_OWNED = re.compile(r"^nanogerman-[a-z]+-(\d+)-")


@contextlib.contextmanager
def scratch_dir(what: str) -> Iterator[str]:
    """A fresh folder ``nanogerman-<what>-<pid>-…`` in the system's temporary folder, removed on exit."""
    folder = tempfile.mkdtemp(prefix=f"{PREFIX}{what}-{os.getpid()}-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_stale_scratch(root: str | None = None) -> list[Path]:
    """Remove scratch folders whose process no longer runs (left by a kill -9); returns what was removed."""
    removed = []
    base = Path(root or tempfile.gettempdir())
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _OWNED.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
