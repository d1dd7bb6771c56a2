"""The export's child process (MaxText's converter, then its forward pass: :mod:`nanogerman.maxtext_export`).

The child runs without a shell, with an allow-listed environment (:func:`child_env`), its
output streamed into the job's log; if the job is interrupted, it is stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def child_env(base: dict | None = None) -> dict:
    """CPU JAX, no Hub access (everything the children read is local), an allow-listed environment (no tokens)."""
    from nanogerman.childenv import child_env as allow_listed

    env = allow_listed(base)
    env["JAX_PLATFORMS"] = "cpu"
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    return env


Runner = Callable[[list[str], dict], tuple[int, str]]


def run_command(command: list[str], env: dict) -> tuple[int, str]:
    """Run a child (no shell) with its output in the job's log; (exit code, its most telling line).

    If this thread is interrupted (Ctrl-C, or Snakemake's SIGTERM turned into KeyboardInterrupt),
    the child is stopped before the interrupt goes on (:func:`nanogerman.job.run_streaming`).
    """
    from nanogerman.job import LineTail, run_streaming

    tail = LineTail()
    log.info("running: %s", " ".join(command))
    return run_streaming(command, env=env, on_line=tail), tail.error_summary()
