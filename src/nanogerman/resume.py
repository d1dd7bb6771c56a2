"""Resuming a killed local run so that its metrics hold every step exactly once.

MaxText writes a step's metrics one step late (its metric logger flushes step N
when step N+1 is queued) but saves the checkpoint of step N before that. A kill
right after the checkpoint of step 50 therefore leaves metrics up to step 48, and
the resumed run starts at step 51: steps 49 and 50 would be missing for good.

:func:`prune_unrecorded_checkpoints` removes, before MaxText starts, the finished
checkpoints newer than the last step recorded without a gap, so MaxText resumes
from one whose steps are all in the metrics and trains the missing steps again (a
step logged twice keeps its newer record). At most one checkpoint period is
trained twice.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def recorded_through(steps: Iterable[int]) -> int:
    """The last step of the gap-free run 0, 1, … among ``steps`` (-1 when step 0 is missing)."""
    present = set(steps)
    last = -1
    while last + 1 in present:
        last += 1
    return last


def prune_unrecorded_checkpoints(checkpoint_dir: str | Path, committed: list[int], recorded_steps: Iterable[int]) -> list[int]:
    """Delete the committed checkpoints after the last gap-free recorded step; returns the steps removed."""
    through = recorded_through(recorded_steps)
    removed = [step for step in committed if step > through]
    for step in removed:
        shutil.rmtree(Path(checkpoint_dir) / str(step))
        log.info(
            "removed checkpoint step %d of %s: the metrics stop at step %d, so MaxText retrains the steps after it",
            step,
            checkpoint_dir,
            through,
        )
    return removed
