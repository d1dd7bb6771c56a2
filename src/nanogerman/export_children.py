"""The export's child processes: MaxText's converter and its forward pass, run side by side and stopped together.

Each child runs without a shell, with an allow-listed environment (:func:`child_env`), its
output streamed into the job's log; if the job is interrupted, both are stopped.
"""

from __future__ import annotations

import logging
import threading
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


_CHILDREN: set = set()  # running children of run_command, stopped if the job is interrupted
_CHILDREN_LOCK = threading.Lock()


def run_command(command: list[str], env: dict) -> tuple[int, str]:
    """Run a child (no shell) with its output in the job's log; (exit code, its most telling line)."""
    import subprocess

    from nanogerman.job import LineTail

    tail = LineTail()
    log.info("running: %s", " ".join(command))
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env, bufsize=1
    )
    with _CHILDREN_LOCK:
        _CHILDREN.add(process)
    try:
        for line in process.stdout:
            tail(line.rstrip("\n"))
        return process.wait(), tail.error_summary()
    finally:
        with _CHILDREN_LOCK:
            _CHILDREN.discard(process)


def stop_children(timeout: float = 20) -> None:
    """Terminate (then kill) the children of :func:`run_command` still running."""
    with _CHILDREN_LOCK:
        running = list(_CHILDREN)
    for process in running:
        process.terminate()
    for process in running:
        try:
            process.wait(timeout=timeout)
        except Exception:  # noqa: BLE001 (subprocess.TimeoutExpired)
            process.kill()


def run_both(first: tuple[list[str], dict], second: tuple[list[str], dict], runner: Runner = run_command):
    """Run two children side by side (each spends most of its time importing and compiling).

    If this thread is interrupted (Ctrl-C, or Snakemake's SIGTERM turned into KeyboardInterrupt),
    both children are stopped.
    """
    results: list = [None, None]

    def target(index: int, command: list[str], env: dict) -> None:
        try:
            results[index] = runner(command, env)
        except BaseException as error:  # re-raised in the caller's thread
            results[index] = error

    threads = [threading.Thread(target=target, args=(index, *job), daemon=True) for index, job in enumerate((first, second))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # a short wait, so a signal's exception arrives promptly
    except BaseException:
        stop_children()
        raise
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results[0], results[1]
