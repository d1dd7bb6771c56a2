"""The evaluation's summary: every model's task metrics from its results files, side by side in one TSV."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanogerman.atomic import atomic_path


def summary_rows(results: dict[str, Sequence[str | Path]]) -> list[dict]:
    """One row per model: every ``<task>/<metric>`` (and its stderr) found in its results files."""
    rows = []
    for model, paths in results.items():
        row: dict[str, Any] = {"model": model}
        for path in paths:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            for task, entry in (data.get("results") or {}).items():
                for key, value in entry.items():
                    metric, _, flt = key.partition(",")
                    if flt == "none" and isinstance(value, (int, float)) and not isinstance(value, bool):
                        row[f"{task}/{metric}"] = value
        rows.append(row)
    return rows


def write_summary(rows: Sequence[dict], out: str | Path) -> None:
    """A tab-separated table of :func:`summary_rows`, columns sorted, stderr after its metric."""
    columns = sorted({key for row in rows for key in row if key != "model"}, key=lambda key: (key.replace("_stderr", ""), key))
    with atomic_path(out) as temporary:
        lines = ["\t".join(["model", *columns])]
        for row in rows:
            lines.append("\t".join([row["model"], *(_cell(row.get(column)) for column in columns)]))
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
