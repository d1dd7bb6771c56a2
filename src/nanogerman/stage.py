"""Running a stage's script under Snakemake: logging to the rule's log, one-line errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanogerman.atomic import sweep_leftovers
from nanogerman.errors import StageError
from nanogerman.scratch import sweep_stale_scratch

log = logging.getLogger("nanogerman")


def configure_logging(log_path: str | Path | None) -> None:
    """INFO and above go to the rule's log file; WARNING and above also to the terminal."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.WARNING)
    terminal.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(terminal)


def run_stage(snakemake: Any, main: Callable[[], Any]) -> Any:
    """Run ``main`` for a rule's ``script:``; a :class:`StageError` becomes one line and exit 1.

    Any other exception is a bug: it is logged with its traceback to the rule's log
    and re-raised, so it is not mistaken for bad input.
    """
    configure_logging(snakemake.log[0] if len(snakemake.log) else None)
    for leftover in sweep_leftovers(list(snakemake.output)):
        log.info("removed %s, left behind by a killed run of this job", leftover)
    for leftover in sweep_stale_scratch():
        log.info("removed %s, the scratch folder of a killed job", leftover)
    try:
        return main()
    except StageError as error:
        log.error("%s", error)  # one line, to the log file and the terminal
        raise SystemExit(1) from None
    except Exception:
        log.exception("unexpected failure in rule %s", getattr(snakemake, "rule", "?"))
        raise
