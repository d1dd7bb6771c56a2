"""Write-to-temp-then-rename helpers, so a failed job never leaves a half-written output."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success.

    The temporary path lives in the same folder so the final ``os.replace`` is atomic.
    On any exception the temporary file or folder is removed and ``destination`` is
    left untouched (absent if it was absent before).
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{destination.name}.tmp-"
    if directory:
        temporary = Path(tempfile.mkdtemp(prefix=prefix, dir=destination.parent))
        os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp makes 0700; give outputs the usual mode
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, dir=destination.parent)
        os.close(handle)
        temporary = Path(name)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give outputs the usual mode
    try:
        yield temporary
        if directory and destination.exists():
            shutil.rmtree(destination)
        os.replace(temporary, destination)
    except BaseException:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(destination: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    with atomic_path(destination) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def temporary_siblings(destination: str | os.PathLike) -> list[Path]:
    """The temporary paths :func:`atomic_path` made for ``destination`` (left behind only by a killed job)."""
    destination = Path(destination)
    if not destination.parent.is_dir():
        return []
    return sorted(destination.parent.glob(f".{glob.escape(destination.name)}.tmp-*"))


def sweep_leftovers(destinations) -> list[Path]:
    """Remove what killed runs of this job left beside its outputs; Snakemake runs one job per output, so they are its own."""
    removed = []
    for destination in destinations:
        for leftover in temporary_siblings(destination):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed
