"""Learning curves: the validation loss MaxText computes while training, and the sanity flags read from curves.

MaxText evaluates on the dataset's validation split every ``eval_interval`` steps (tfds and Grain
alike) and logs one line per evaluation, ``Completed eval after train step N, loss=…,
total_weights=…``. Its ``metrics_file`` cannot be relied on for these: each evaluation's running
records restart at step 0, which empties the file. So the training stage also records MaxText's
log lines (:class:`LogRecorder`) and :func:`merge_metrics` joins both into one record per training
step, with ``eval/avg_loss`` (nats per token) and ``eval/total_weights`` (tokens evaluated) on the
steps after which MaxText evaluated.

Flags (pure functions of numbers, so the report and the tests share them):

- :func:`overfitting_step`: validation loss rising for ``patience`` evaluations in a row while the
  training loss falls; returns the step from which it rose.
- :func:`worse_than_uniform`: held-out bits per byte at or above a uniform guess over the vocabulary.
- :func:`no_improvement`: held-out bits per byte no better at the last evaluated checkpoint than at the first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

TRAIN_LOSS = "learning/loss"
EVAL_LOSS = "eval/avg_loss"
EVAL_WEIGHTS = "eval/total_weights"
EVAL_TOTAL = "eval/total_loss"

EVAL_LINE = re.compile(
    r"Completed eval after train step (?P<step>\d+), loss=(?P<loss>[-+0-9.eE]+|nan|inf)"
    r".*?total_weights=(?P<weights>[0-9.]+)"
)
TRAIN_LINE = re.compile(
    r"completed step: (?P<step>\d+), seconds: (?P<seconds>[0-9.]+)"
    r"(?:.*?Tokens/s/device: (?P<tokens_per_sec>[0-9.]+))?"
    r".*?total_weights: (?P<weights>[0-9.]+), loss: (?P<loss>[-+0-9.eE]+|nan|inf)"
)
LOG_METRICS_NAME = "metrics.log.jsonl"


def parse_eval_line(line: str) -> dict | None:
    """MaxText's end-of-evaluation log line as a record: step, eval/avg_loss, eval/total_weights, eval/total_loss."""
    match = EVAL_LINE.search(line)
    if not match:
        return None
    loss, weights = float(match["loss"]), float(match["weights"])
    return {"step": int(match["step"]), EVAL_LOSS: loss, EVAL_WEIGHTS: weights, EVAL_TOTAL: loss * weights}


def parse_train_line(line: str) -> dict | None:
    """MaxText's 'completed step: …' log line as a training record."""
    match = TRAIN_LINE.search(line)
    if not match:
        return None
    record = {
        "step": int(match["step"]),
        TRAIN_LOSS: float(match["loss"]),
        "learning/total_weights": float(match["weights"]),
        "perf/step_time_seconds": float(match["seconds"]),
    }
    if match["tokens_per_sec"] is not None:
        record["perf/per_device_tokens_per_sec"] = float(match["tokens_per_sec"])
    return record


def log_metrics_path(raw_metrics: str | Path) -> Path:
    """Where :class:`LogRecorder` writes, beside MaxText's own metrics file."""
    return Path(raw_metrics).with_name(LOG_METRICS_NAME)


class LogRecorder:
    """Appends the training and evaluation records of MaxText's log lines to a JSON-lines file.

    The file is emptied when the run starts at step 0 (a resumed run appends, like MaxText's metrics_file).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str) -> None:
        record = parse_train_line(line)
        fresh = record is not None and record["step"] == 0
        record = record or parse_eval_line(line)
        if record is None:
            return
        with open(self.path, "w" if fresh else "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def merge_metrics(*sources: Iterable[dict]) -> list[dict]:
    """One record per training step, sorted; evaluation loss added to the step it followed.

    Sources come in order of preference: a later source's fields win for the same step (MaxText's
    metrics_file after the log's records, for its full precision). Records of MaxText's running
    evaluation averages (eval/avg_loss without eval/total_loss) are left out: their step is the
    evaluation batch, not a training step.
    """
    train: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    for records in sources:
        for record in records:
            if "step" not in record:
                continue
            step = int(record["step"])
            if TRAIN_LOSS in record:
                train[step] = {**train.get(step, {}), **record, "step": step}
            elif EVAL_TOTAL in record and EVAL_LOSS in record:
                evals[step] = {EVAL_LOSS: float(record[EVAL_LOSS]), EVAL_WEIGHTS: float(record.get(EVAL_WEIGHTS, 0.0))}
    for step, values in evals.items():
        if step in train:
            train[step].update(values)
    return [train[step] for step in sorted(train)]


def eval_curve(records: Sequence[dict]) -> list[tuple[int, float]]:
    """(step, validation loss) of the steps after which MaxText evaluated."""
    return [(int(record["step"]), float(record[EVAL_LOSS])) for record in records if EVAL_LOSS in record]


def eval_summary(records: Sequence[dict]) -> dict:
    """First, best and final validation loss and the number of evaluations (for train.json)."""
    curve = eval_curve(records)
    if not curve:
        return {"evaluations": 0}
    best_step, best = min(curve, key=lambda point: point[1])
    return {
        "evaluations": len(curve),
        "first_eval_loss": curve[0][1],
        "final_eval_loss": curve[-1][1],
        "best_eval_loss": best,
        "best_eval_step": best_step,
        "overfitting_from_step": overfitting_step(records),
    }


# --- flags -----------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    finite = [value for value in values if math.isfinite(value)]
    return sum(finite) / len(finite) if finite else None


def overfitting_step(records: Sequence[dict], patience: int = 3) -> int | None:
    """The step from which the validation loss rose for ``patience`` evaluations in a row while the training loss fell.

    The training loss at an evaluation is the mean over the steps since the previous one (one
    step is too noisy). Returns the evaluation step before the first rise, or None.
    """
    records = sorted(records, key=lambda record: int(record["step"]))
    points = []  # (step, eval loss, mean training loss since the previous evaluation)
    window: list[float] = []
    for record in records:
        if TRAIN_LOSS in record:
            window.append(float(record[TRAIN_LOSS]))
        if EVAL_LOSS in record:
            points.append((int(record["step"]), float(record[EVAL_LOSS]), _mean(window)))
            window = []
    rises = 0
    for index in range(1, len(points)):
        (_, eval_before, train_before), (_, eval_now, train_now) = points[index - 1], points[index]
        falling = train_before is not None and train_now is not None and train_now < train_before
        if eval_now > eval_before and falling:
            rises += 1
            if rises >= patience:
                return points[index - patience][0]
        else:
            rises = 0
    return None


def worse_than_uniform(bits_per_byte: float | None, uniform_bits_per_byte: float | None) -> bool:
    """True when held-out bits per byte is at or above what a uniform guess over the vocabulary scores."""
    if bits_per_byte is None or uniform_bits_per_byte is None:
        return False
    return not bits_per_byte < uniform_bits_per_byte


def no_improvement(bits_per_byte_by_step: Sequence[tuple[int, float]]) -> bool:
    """True when at least two checkpoints were evaluated and the last one's bits per byte is no lower than the first's."""
    points = sorted(bits_per_byte_by_step)
    return len(points) >= 2 and not points[-1][1] < points[0][1]


# --- what the report shows ---------------------------------------------------------------------------

MARK_UNIFORM, MARK_OVERFIT, MARK_STALLED = "¶", "‖", "¤"


def uniform_messages(values: dict[tuple[str, str], float], uniform: dict[str, float]) -> list[str]:
    """'<task> worse than uniform' for each bits-per-byte value at or above its task's uniform-guess figure."""
    return [
        f"{task} worse than uniform ({value:.3f} ≥ {uniform[task]:.3f} bits/byte)"
        for (task, metric), value in sorted(values.items())
        if metric == "bits_per_byte" and worse_than_uniform(value, uniform.get(task))
    ]


def no_improvement_message(paths: Iterable[str | Path]) -> dict[str, str]:
    """{run: "no improvement in held-out bits per byte (first → last)"} from the checkpoint stage's curves.csv files."""
    import csv

    found = {}
    for path in paths:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["metric"] == "bits_per_byte"]
        points = sorted((int(row["step"]), float(row["value"])) for row in rows)
        if rows and no_improvement(points):
            found[rows[0]["run"]] = f"no improvement in held-out bits per byte ({points[0][1]:.3f} → {points[-1][1]:.3f})"
    return found


def read_metrics(path: str | Path) -> list[dict]:
    """A run's metrics.jsonl as one record per training step (a torn last line skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return merge_metrics(records)
