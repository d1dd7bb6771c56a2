"""Is a difference between two models real? Paired tests over the same items, and an unpaired fallback.

- :func:`paired_comparison`: two models' per-item scores on one task (lm-eval's samples, kept by
  the evaluation stage as ``results["nanogerman"]["items"]``), matched by ``doc_id``: the mean
  difference, a paired bootstrap confidence interval (items resampled with replacement, the same
  draw for both models) and, for 0/1 accuracies, McNemar's exact test (a two-sided binomial test
  on the items exactly one of the two models gets right; scipy's ``binomtest``).
- :func:`unpaired_comparison`: for published rows without per-item data (value ± standard
  error), a two-sided z-test on the difference, labelled ``unpaired`` in the table.
- :func:`comparison_pairs`: the pairs the config compares: training runs that differ in exactly
  one of ``tokenizer`` and ``learning_rate``.
- :func:`published_comparisons`: the same pairs among published rows (value ± stderr, no items).

Besides accuracy, :func:`compare_results` compares the per-item bits per byte of the correct answer
(:data:`nanogerman.suites.GOLD_BPB`, lower is better), which separates models that are both at chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from nanogerman.atomic import atomic_path
from nanogerman.errors import StageError
from nanogerman.suites import GOLD_BPB

COMPARED_SETTINGS = ("tokenizer", "learning_rate")


class SignificanceError(StageError):
    """Two result sets cannot be compared."""


@dataclass(frozen=True)
class Comparison:
    first: str
    second: str
    task: str
    metric: str
    difference: float  # first minus second
    low: float | None
    high: float | None
    p_value: float | None
    items: int | None
    test: str  # "paired bootstrap + McNemar", "paired bootstrap" or "unpaired z-test (value ± stderr)"
    alpha: float = 0.05

    @property
    def significant(self) -> bool:
        if self.p_value is not None:
            return self.p_value < self.alpha
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def mcnemar_p(first: Sequence[float], second: Sequence[float]) -> float:
    """McNemar's exact two-sided p-value for paired 0/1 outcomes."""
    from scipy.stats import binomtest

    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    only_first = int(np.sum((a == 1) & (b == 0)))
    only_second = int(np.sum((a == 0) & (b == 1)))
    if only_first + only_second == 0:
        return 1.0
    return float(binomtest(only_first, only_first + only_second, 0.5).pvalue)


def bootstrap_interval(
    first: Sequence[float], second: Sequence[float], *, iterations: int = 10_000, seed: int = 1234, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean paired difference, items resampled with replacement."""
    differences = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(differences), size=(iterations, len(differences)))
    means = differences[draws].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def paired_comparison(
    first: str,
    second: str,
    task: str,
    metric: str,
    items_first: dict,
    items_second: dict,
    *,
    iterations: int = 10_000,
    seed: int = 1234,
) -> Comparison:
    """Compare two models' per-item ``metric`` on ``task`` over the items both have (``{"doc_id": [...], metric: [...]}``);
    ``iterations=0`` leaves the bootstrap interval out."""
    try:
        a = dict(zip(items_first["doc_id"], items_first[metric], strict=False))
        b = dict(zip(items_second["doc_id"], items_second[metric], strict=False))
    except KeyError as error:
        raise SignificanceError(
            f"{task}: no per-item {error.args[0]!r} for {first} or {second}; rerun their evaluation"
        ) from None
    shared = sorted(set(a) & set(b))
    if not shared:
        raise SignificanceError(f"{task}: {first} and {second} share no items")
    x, y = [float(a[key]) for key in shared], [float(b[key]) for key in shared]
    low, high = bootstrap_interval(x, y, iterations=iterations, seed=seed) if iterations else (None, None)
    binary = set(x) | set(y) <= {0.0, 1.0}
    return Comparison(
        first,
        second,
        task,
        metric,
        float(np.mean(x) - np.mean(y)),
        low,
        high,
        mcnemar_p(x, y) if binary else None,
        len(shared),
        "paired bootstrap + McNemar" if binary else "paired bootstrap",
    )


def unpaired_comparison(
    first: str,
    second: str,
    task: str,
    metric: str,
    value_first: float,
    stderr_first: float,
    value_second: float,
    stderr_second: float,
) -> Comparison:
    """Two published values ± standard error (no per-item data): a two-sided z-test and a 95 % normal interval."""
    difference = value_first - value_second
    spread = math.hypot(stderr_first, stderr_second)
    p_value = math.erfc(abs(difference) / spread / math.sqrt(2)) if spread > 0 else (0.0 if difference else 1.0)
    return Comparison(
        first,
        second,
        task,
        metric,
        difference,
        difference - 1.96 * spread,
        difference + 1.96 * spread,
        p_value,
        None,
        "unpaired z-test (value ± stderr)",
    )


def comparison_pairs(runs: Sequence[dict]) -> list[tuple[str, str]]:
    """Training runs (config entries) that differ in exactly one of :data:`COMPARED_SETTINGS` and agree on the other."""
    pairs = []
    for a, b in combinations(runs, 2):
        differing = [key for key in COMPARED_SETTINGS if a.get(key) != b.get(key)]
        if len(differing) == 1:
            pairs.append((a["name"], b["name"]))
    return pairs


def published_comparisons(rows: Sequence[dict]) -> list[Comparison]:
    """Unpaired comparisons of published rows (``name``, ``tokenizer``, ``learning_rate``, ``task``, ``metric``,
    ``value``, ``stderr``) for the pairs :func:`comparison_pairs` finds among their models, per task and metric."""
    models: dict[str, dict] = {}
    scores: dict[tuple[str, str, str], dict] = {}
    for row in rows:
        models.setdefault(row["name"], {key: row.get(key) for key in ("name", *COMPARED_SETTINGS)})
        scores[(row["name"], row["task"], row["metric"])] = row
    found = []
    for first, second in comparison_pairs(list(models.values())):
        for (name, task, metric), a in scores.items():
            b = scores.get((second, task, metric))
            if name == first and b is not None:
                found.append(
                    unpaired_comparison(
                        first, second, task, metric, float(a["value"]), float(a["stderr"]), float(b["value"]), float(b["stderr"])
                    )
                )
    return found


COLUMNS = ("first", "second", "task", "metric", "difference", "low", "high", "p_value", "items", "test", "significant")


def write_comparisons(comparisons: Sequence[Comparison], markdown_out: str | Path, csv_out: str | Path) -> None:
    """The ``comparisons`` table: pair, task, metric, difference, 95 % interval, p-value, test; Markdown and CSV."""
    import csv
    import io

    def number(value, fmt="{:+.4f}"):
        return "–" if value is None else fmt.format(value)

    lines = [
        "| first | second | task | metric | difference | 95 % interval | p | items | test | significant |",
        "|---|---|---|---|---:|---|---:|---:|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.first} | {c.second} | {c.task} | {c.metric} | {number(c.difference)} | "
            f"[{number(c.low)}, {number(c.high)}] | {number(c.p_value, '{:.3g}')} | {c.items or '–'} | {c.test} | "
            f"{'yes' if c.significant else 'no'} |"
        )
    if any(c.metric == GOLD_BPB for c in comparisons):
        lines += [
            "",
            f"{GOLD_BPB}: bits per byte each model spends on the correct answer's text given the prompt, per item "
            "(lower is better, so a negative difference favours the first model). It separates models that are both at "
            "chance on accuracy, and measures how well they model the answer text, not whether they can do the task.",
        ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for c in comparisons:
        row = {**asdict(c), "significant": c.significant}
        writer.writerow([row[key] for key in COLUMNS])
    with atomic_path(markdown_out) as temporary:
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with atomic_path(csv_out) as temporary:
        temporary.write_text(buffer.getvalue(), encoding="utf-8")


def comparisons_section(paths: Sequence[str | Path]) -> str:
    """The report's ``Comparisons`` section: the comparisons table (:func:`write_comparisons`'s Markdown) as written."""
    tables = [Path(path).read_text(encoding="utf-8").strip() for path in paths]
    if not any(tables):
        return ""
    return (
        "\n## Comparisons\n\nPer task, each pair of runs that differ in one setting (tokenizer or learning rate): the "
        "difference (first minus second), its 95 % interval and p-value over the same items "
        "(results/eval/comparisons.csv).\n\n" + "\n\n".join(table for table in tables if table) + "\n"
    )


def compare_results(
    pairs: Sequence[tuple[str, str]],
    results: dict[str, str | Path],
    *,
    metrics: Sequence[str] = ("acc", "acc_norm", GOLD_BPB),
    iterations: int = 10_000,
    seed: int = 1234,
) -> list[Comparison]:
    """Paired comparisons for every pair and every task both models' lm-eval results hold per-item scores for."""
    import json

    items = {}
    for name, path in results.items():
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        items[name] = (data.get("nanogerman") or {}).get("items") or {}
    found = []
    for first, second in pairs:
        for task in [task for task in items[first] if task in items[second]]:
            for metric in metrics:
                if metric in items[first][task] and metric in items[second][task]:
                    found.append(
                        paired_comparison(
                            first, second, task, metric, items[first][task], items[second][task], iterations=iterations, seed=seed
                        )
                    )
    return found


# --- the overview: is the best value's lead real? ---------------------------------------------------

MARK_LEAD = "≈"  # the overview's footnote mark on a best value whose lead over the second is not significant
LEAD_ITERATIONS = 2000  # bootstrap draws for a lead on scores other than 0/1 (McNemar alone decides for 0/1 scores)


def read_items(path: str | Path) -> dict[str, dict]:
    """{task: per-item scores} that the evaluation stage keeps in an lm-eval results file; {} where it has none."""
    import json

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return dict(((data.get("nanogerman") or {}).get("items") or {}) if isinstance(data, dict) else {})


def _scalar_items(items: dict | None, metric: str) -> bool:
    values = (items or {}).get(metric)
    return bool(values) and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)


def best_lead(entries: Sequence[tuple], task: str, metric: str, *, higher_is_better: bool, seed: int = 1234) -> Comparison | None:
    """The best of ``entries`` against the second best on ``task``: the comparison that says whether the lead is real.

    ``entries`` are (name, score or None, that model's per-item results of ``task`` or None); a score has ``value``
    and ``stderr``. Paired (bootstrap, and McNemar for 0/1 scores) where both models have per-item ``metric``, else
    the unpaired z-test on value ± standard error; None with fewer than two scores or neither kind of data.
    """
    present = [entry for entry in entries if entry[1] is not None]
    if len(present) < 2:
        return None
    (first, a, items_a), (second, b, items_b) = sorted(present, key=lambda entry: entry[1].value, reverse=higher_is_better)[:2]
    if _scalar_items(items_a, metric) and _scalar_items(items_b, metric):
        try:
            found = paired_comparison(first, second, task, metric, items_a, items_b, iterations=0)  # McNemar for 0/1
            if found.p_value is not None:
                return found
            return paired_comparison(first, second, task, metric, items_a, items_b, iterations=LEAD_ITERATIONS, seed=seed)
        except SignificanceError:
            pass  # no shared items: fall back to the unpaired test
    if a.stderr is not None and b.stderr is not None:
        return unpaired_comparison(first, second, task, metric, a.value, a.stderr, b.value, b.stderr)
    return None


def column_leads(models: Sequence, columns: Sequence) -> dict[str, Comparison | None]:
    """{column key: :func:`best_lead`} for the overview's columns (``task``, ``metric``) and models (``scores``, ``items``)."""
    return {
        column.key: best_lead(
            [(model.name, model.scores.get((column.task, column.metric.key)), model.items.get(column.task)) for model in models],
            column.task,
            column.metric.key,
            higher_is_better=column.metric.higher_is_better,
        )
        for column in columns
    }


def lead_unclear(lead: Comparison | None) -> bool:
    """True when a best value's lead was tested and is not significant."""
    return lead is not None and not lead.significant


def lead_notes(leads: dict[str, Comparison | None]) -> list[str]:
    """The overview's footnote for :data:`MARK_LEAD`: each best value whose lead is not significant, with its test."""
    unclear = [lead for lead in leads.values() if lead_unclear(lead)]
    if not unclear:
        return []

    def detail(lead: Comparison) -> str:
        test = f"paired, {lead.items} items" if lead.items else "unpaired z-test on value ± stderr"
        if lead.p_value is None:
            return f"95 % interval [{lead.low:+.4f}, {lead.high:+.4f}], {test}"
        return f"p = {lead.p_value:.2g}, {test}"

    listed = "; ".join(
        f"{lead.task} {lead.metric}: {lead.first} over {lead.second} by {lead.difference:+.4f} ({detail(lead)})"
        for lead in unclear
    )
    return [
        f"{MARK_LEAD} the best value's lead over the second is not significant at {unclear[0].alpha:g} (McNemar's test on "
        "the same items where both models have lm-eval's per-item results, a paired bootstrap interval for other per-item "
        "scores, else a z-test on value ± standard error): " + listed + "."
    ]
