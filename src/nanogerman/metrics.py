"""MaxText's per-step metrics: its log lines parsed, the JSON-lines records read and written, summaries.

Used by both training backends (:mod:`nanogerman.job`) and by the report. No heavy imports.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

from nanogerman.atomic import atomic_path

STEP_LINE = re.compile(
    r"completed step: (?P<step>\d+), seconds: (?P<seconds>[0-9.]+)"
    r"(?:.*?Tokens/s/device: (?P<tokens_per_sec>[0-9.]+))?"
    r".*?total_weights: (?P<weights>[0-9.]+), loss: (?P<loss>[-+0-9.eE]+|nan|inf)"
)


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file; a torn last line (process killed mid-write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def dedupe_steps(records: Iterable[dict]) -> list[dict]:
    """One record per step, sorted; a step logged twice (rerun after resuming) keeps its last record."""
    by_step: dict[int, dict] = {}
    for record in records:
        if "step" not in record:
            continue
        step = int(record["step"])
        by_step[step] = {**record, "step": step}
    return [by_step[step] for step in sorted(by_step)]


def parse_step_line(line: str) -> dict | None:
    """A MaxText 'completed step: …' log line as a metrics record (what the tpu backend streams)."""
    match = STEP_LINE.search(line)
    if not match:
        return None
    record = {
        "step": int(match["step"]),
        "learning/loss": float(match["loss"]),
        "learning/total_weights": float(match["weights"]),
        "perf/step_time_seconds": float(match["seconds"]),
    }
    if match["tokens_per_sec"] is not None:
        record["perf/per_device_tokens_per_sec"] = float(match["tokens_per_sec"])
    return record


def last_match(pattern: re.Pattern, lines: Iterable[str]) -> int | None:
    found = None
    for line in lines:
        match = pattern.search(line)
        if match:
            found = int(match.group(1))
    return found


def summarize_metrics(records: Sequence[dict], tokens_per_step: int) -> dict:
    """Loss and throughput figures of a run's per-step records (deduplicated)."""
    if not records:
        return {"steps_logged": 0}
    losses = [float(record["learning/loss"]) for record in records]
    tail = losses[-min(10, len(losses)) :]
    weights = [float(record.get("learning/total_weights", tokens_per_step)) for record in records]
    times = [float(record.get("perf/step_time_seconds", 0.0)) for record in records]
    steady = [(w, t) for w, t in zip(weights[2:], times[2:], strict=False) if t > 0] or [
        (w, t) for w, t in zip(weights, times, strict=False) if t > 0
    ]
    tokens_per_second = None
    if steady:
        median_time = statistics.median(t for _, t in steady)
        kept = [(w, t) for w, t in steady if t <= 5 * median_time]  # drop compile and checkpoint outliers
        tokens_per_second = sum(w for w, _ in kept) / sum(t for _, t in kept)
    return {
        "steps_logged": len(records),
        "first_step": records[0]["step"],
        "last_step": records[-1]["step"],
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "final_loss_mean_last_10": sum(tail) / len(tail),
        "min_loss": min(losses),
        "tokens_seen": int(sum(weights)),
        "tokens_processed": tokens_per_step * len(records),
        "tokens_per_second": tokens_per_second,
        "step_seconds_total": sum(times),
    }


def write_jsonl(destination: str | Path, records: Iterable[dict]) -> None:
    with atomic_path(destination) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=True) + "\n")


class StepRecorder:
    """Appends streamed step records to a JSON-lines file the way MaxText's metrics_file does (step 0 truncates)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str) -> None:
        record = parse_step_line(line)
        if record is None:
            return
        mode = "w" if record["step"] == 0 else "a"
        with open(self.path, mode, encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
