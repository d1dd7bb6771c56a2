"""Provenance shared by every stage: the project root, package versions, the git commit and file hashes.

One implementation each, so every manifest records them the same way:

- :func:`package_versions` — installed versions of named distributions (None when absent);
- :func:`git_commit` — ``git rev-parse HEAD`` with ``-dirty`` when tracked files have
  uncommitted changes, so a run trained from a dirty tree never shows a clean hash;
- :func:`file_sha256` — a file's sha256, read in chunks (checkpoints and shards can be large).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMMIT_VARIABLE = "NANOGERMAN_GIT_COMMIT"  # the commit to record outside a git checkout (e.g. an unpacked release)
UNKNOWN_COMMIT = "unknown (not a git checkout)"


def package_versions(names: Iterable[str], *, python: bool = False) -> dict[str, str | None]:
    """``{name: version}`` for installed distributions (None when one is not installed); ``python`` adds the interpreter."""
    found: dict[str, str | None] = {"python": sys.version.split()[0]} if python else {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit(root: str | Path = PROJECT_ROOT) -> str:
    """The project's commit, ``<sha>-dirty`` with uncommitted changes to tracked files.

    Outside a git checkout: ``$NANOGERMAN_GIT_COMMIT`` if set, else :data:`UNKNOWN_COMMIT`.
    """

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None

    head = git("rev-parse", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return os.environ.get(COMMIT_VARIABLE) or UNKNOWN_COMMIT
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = status is not None and status.returncode == 0 and bool(status.stdout.strip())
    return head.stdout.strip() + ("-dirty" if dirty else "")


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, read ``chunk_bytes`` at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
