"""Write-to-temp-then-rename helpers, so a failed job never leaves a half-written output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


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
