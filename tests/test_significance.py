"""Is a difference real: paired bootstrap and McNemar over the same items, the unpaired fallback, the pairs compared."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nanogerman.significance import (
    bootstrap_interval,
    compare_results,
    comparison_pairs,
    comparisons_section,
    mcnemar_p,
    paired_comparison,
    published_comparisons,
    unpaired_comparison,
    write_comparisons,
)


def items(values) -> dict:
    return {"doc_id": list(range(len(values))), "acc": [float(value) for value in values]}


def test_two_copies_of_one_model_differ_in_nothing():
    rng = np.random.default_rng(0)
    scores = items(rng.integers(0, 2, 400))
    result = paired_comparison("a", "a_copy", "arc_de", "acc", scores, dict(scores))
    assert (result.difference, result.low, result.high, result.p_value, result.items) == (0.0, 0.0, 0.0, 1.0, 400)
    assert not result.significant and result.test == "paired bootstrap + McNemar"


def test_a_clear_lead_on_the_same_items_is_significant_and_a_coin_flip_is_not():
    rng = np.random.default_rng(1)
    weak = rng.random(300) < 0.25
    strong = weak | (rng.random(300) < 0.4)  # right wherever the weak one is, and on more items
    lead = paired_comparison("strong", "weak", "t", "acc", items(strong), items(weak))
    assert lead.significant and lead.p_value < 1e-6 and 0 < lead.low < lead.difference < lead.high
    other = rng.random(300) < 0.25
    noise = paired_comparison("other", "weak", "t", "acc", items(other), items(weak))
    assert noise.low < 0 < noise.high and noise.p_value > 0.05 and not noise.significant


def test_mcnemar_counts_only_discordant_items():
    assert mcnemar_p([1, 1, 0, 0], [1, 1, 0, 0]) == 1.0
    assert mcnemar_p([1] * 10 + [0] * 10, [0] * 10 + [0] * 10) == pytest.approx(2 * 0.5**10)
    low, high = bootstrap_interval([1] * 50 + [0] * 50, [0] * 100, iterations=2000)
    assert 0.35 < low < 0.5 < high < 0.65


def test_published_rows_without_items_use_an_unpaired_test_labelled_as_such():
    """Leads like the seed's (0.002 to 0.005, each within about one standard error) are not significant."""
    close = unpaired_comparison("neox", "nanochat", "hellaswag_de", "acc", 0.2530, 0.0043, 0.2510, 0.0043)
    assert close.test == "unpaired z-test (value ± stderr)" and close.items is None
    assert close.p_value > 0.5 and not close.significant and close.low < 0 < close.high
    far = unpaired_comparison("a", "b", "t", "acc", 0.30, 0.004, 0.25, 0.004)
    assert far.significant and far.p_value < 1e-10


SEED_ROWS = Path(__file__).parent / "data" / "published" / "seed_nano.csv"


def test_the_seeds_published_rows_show_no_significant_difference(tmp_path):
    """The seed's four ablations as published (value ± stderr, tests/data/published): every one-setting pair, every
    task and metric, compared unpaired and labelled so; none is significant, although the seed concluded from them
    that the GPT-NeoX tokenizer is better. The same test does see LLaMmlein's hellaswag_de lead over a nano model."""
    with SEED_ROWS.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    found = published_comparisons(rows)
    pairs = sorted({(c.first, c.second) for c in found})
    assert pairs == [
        ("nano_nanochat_lr4e-6", "nano_neox_lr4e-6"),
        ("nano_nanochat_lr6e-6", "nano_nanochat_lr4e-6"),
        ("nano_nanochat_lr6e-6", "nano_neox_lr6e-6"),
        ("nano_neox_lr6e-6", "nano_neox_lr4e-6"),
    ]
    assert len(found) == 4 * 7  # seven task/metric columns per pair
    assert {c.test for c in found} == {"unpaired z-test (value ± stderr)"} and all(c.items is None for c in found)
    assert not [c for c in found if c.significant], [c for c in found if c.significant]
    write_comparisons(found, tmp_path / "c.md", tmp_path / "c.csv")
    table = [line for line in (tmp_path / "c.md").read_text(encoding="utf-8").splitlines() if line.startswith("| nano_")]
    assert len(table) == 28 and all("| unpaired z-test (value ± stderr) | no |" in line for line in table)
    scores = {(row["name"], row["task"], row["metric"]): row for row in rows}
    a, b = scores[("llaemmlein_120m", "hellaswag_de", "acc")], scores[("nano_neox_lr6e-6", "hellaswag_de", "acc")]
    lead = unpaired_comparison(
        "llaemmlein_120m",
        "nano_neox_lr6e-6",
        "hellaswag_de",
        "acc",
        *(float(row[key]) for row in (a, b) for key in ("value", "stderr")),
    )
    assert lead.significant and lead.p_value < 1e-6


def test_gold_bits_per_byte_reads_the_correct_answers_log_likelihood():
    from nanogerman.suites import GOLD_BPB, gold_bits_per_byte, item_scores

    sample = {
        "doc_id": 0,
        "target": 1,
        "arguments": [("Frage:", " nein"), ("Frage:", " grün")],
        "filtered_resps": [(-3.0, False), (-7.0, True)],
        "acc": 0.0,
    }
    assert gold_bits_per_byte(sample) == pytest.approx(7.0 / math.log(2) / len(" grün".encode()))
    assert gold_bits_per_byte({**sample, "target": "grün"}) == gold_bits_per_byte(sample)  # gold given as its text
    for broken in ({"target": [0, 1]}, {"target": 2}, {"target": "vielleicht"}, {"filtered_resps": [(-3.0, False)]}):
        assert gold_bits_per_byte({**sample, **broken}) is None, broken
    kept = item_scores({"t": [{**sample, "doc_id": 1}, sample], "u": [{**sample, "target": [0]}]})
    assert kept["t"]["doc_id"] == [0, 1] and len(kept["t"][GOLD_BPB]) == 2 and GOLD_BPB not in kept["u"]


def test_pairs_differ_in_exactly_one_setting():
    runs = [
        {"name": "nc_lr1", "tokenizer": "nc", "learning_rate": 1e-3},
        {"name": "nx_lr1", "tokenizer": "nx", "learning_rate": 1e-3},
        {"name": "nc_lr6", "tokenizer": "nc", "learning_rate": 6e-4},
        {"name": "nx_lr6", "tokenizer": "nx", "learning_rate": 6e-4},
    ]
    assert comparison_pairs(runs) == [("nc_lr1", "nx_lr1"), ("nc_lr1", "nc_lr6"), ("nx_lr1", "nx_lr6"), ("nc_lr6", "nx_lr6")]


def test_comparisons_table_from_results_files(tmp_path):
    rng = np.random.default_rng(2)
    files = {}
    for name, values in (("a", rng.integers(0, 2, 50)), ("b", rng.integers(0, 2, 50))):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps({"results": {}, "nanogerman": {"items": {"arc_de": items(values)}}}))
    found = compare_results([("a", "b")], files, iterations=500)
    assert [(c.first, c.second, c.task, c.metric) for c in found] == [("a", "b", "arc_de", "acc")]
    write_comparisons(found, tmp_path / "c.md", tmp_path / "c.csv")
    assert "| a | b | arc_de | acc |" in (tmp_path / "c.md").read_text()
    header, row = (tmp_path / "c.csv").read_text().splitlines()
    assert header.startswith("first,second,task,metric,difference,low,high,p_value") and row.startswith("a,b,arc_de,acc,")


def _results_file(path, task, scores, *, with_items=True):
    """An lm-eval results file as the evaluation stage writes it: acc ± stderr and, optionally, the per-item scores."""
    values = np.asarray(scores, dtype=float)
    entry = {"acc,none": float(values.mean()), "acc_stderr,none": float(values.std(ddof=1) / np.sqrt(len(values)))}
    path.write_text(json.dumps({"results": {task: entry}, "nanogerman": {"items": {task: items(values)}} if with_items else {}}))
    return path


def _overview(tmp_path, scores: dict, *, with_items=True):
    from nanogerman.report_data import assemble_models
    from nanogerman.report_flags import FlagSettings, ReportSettings
    from nanogerman.report_tables import overview_table, select_columns
    from nanogerman.significance import column_leads, lead_notes

    tmp_path.mkdir(parents=True, exist_ok=True)
    files = {
        name: [_results_file(tmp_path / f"{name}.json", "t", values, with_items=with_items)] for name, values in scores.items()
    }
    models = assemble_models([], files)
    columns = select_columns(models, ReportSettings(chance={}))
    table = overview_table(models, columns, FlagSettings.from_schema())
    return {row[0].text: row[1] for row in table.rows}, lead_notes(column_leads(models, columns))


def test_the_overview_marks_a_best_value_whose_lead_is_noise(tmp_path):
    from nanogerman.significance import MARK_LEAD

    rng = np.random.default_rng(3)
    base = rng.random(400) < 0.3
    flipped = base.copy()
    flipped[np.flatnonzero(~base)[:14]] = True  # noise: 14 items gained and 8 lost, a lead of 6 in 400 (McNemar p ≈ 0.29)
    flipped[np.flatnonzero(base)[:8]] = False
    cells, notes = _overview(tmp_path / "noise", {"a": base, "b": flipped})
    assert cells["b"].bold and cells["b"].marks == MARK_LEAD and not cells["a"].bold and cells["a"].marks == ""
    assert len(notes) == 1 and notes[0].startswith(f"{MARK_LEAD} the best value's lead") and "paired, 400 items" in notes[0]
    assert cells["b"].latex().endswith(r"\textsuperscript{$\approx$} {\scriptsize $\pm$ " + cells["b"].stderr + "}")

    strong = base | (rng.random(400) < 0.4)  # right wherever the other is, and on many more items
    cells, notes = _overview(tmp_path / "clear", {"a": base, "strong": strong})
    assert cells["strong"].bold and cells["strong"].marks == "" and notes == []


def test_rows_without_items_are_compared_unpaired_and_labelled(tmp_path):
    """Published value ± stderr only: the unpaired z-test decides, and the note says so."""
    rng = np.random.default_rng(4)
    cells, notes = _overview(tmp_path, {"a": rng.random(300) < 0.26, "b": rng.random(300) < 0.25}, with_items=False)
    assert any(cell.marks == "≈" for cell in cells.values())
    assert "unpaired z-test on value ± stderr" in notes[0]


def test_best_lead_needs_two_scores_and_data_to_test():
    from nanogerman.report_data import Score
    from nanogerman.significance import best_lead, lead_notes

    rng = np.random.default_rng(6)
    graded = rng.random(200)  # per-item scores other than 0/1: the paired bootstrap interval decides
    close = {"doc_id": list(range(200)), "acc": (graded + rng.normal(0, 0.01, 200)).tolist()}
    lead = best_lead(
        [("a", Score(0.51, 0.02), items(graded)), ("b", Score(0.50, 0.02), close)], "t", "acc", higher_is_better=True
    )
    assert lead.first == "a" and lead.p_value is None and lead.test == "paired bootstrap" and lead.low is not None
    assert not lead.significant and lead.low < 0 < lead.high and "95 % interval [" in lead_notes({"t/acc": lead})[0]
    assert best_lead([("a", Score(0.5), None), ("b", Score(0.4), None)], "t", "acc", higher_is_better=True) is None
    assert best_lead([("a", Score(0.5, 0.01), None), ("b", None, None)], "t", "acc", higher_is_better=True) is None
    lower = best_lead(
        [("a", Score(3.1, 0.1), None), ("b", Score(3.0, 0.1), None)], "bpb", "bits_per_byte", higher_is_better=False
    )
    assert (lower.first, lower.second, lower.test) == ("b", "a", "unpaired z-test (value ± stderr)")


def test_the_report_section_holds_the_comparisons_table_as_written(tmp_path):
    found = [unpaired_comparison("a", "b", "arc_de", "acc", 0.30, 0.01, 0.25, 0.01)]
    write_comparisons(found, tmp_path / "c.md", tmp_path / "c.csv")
    section = comparisons_section([tmp_path / "c.md"])
    assert section.startswith("\n## Comparisons\n") and (tmp_path / "c.md").read_text().strip() in section
    assert comparisons_section([]) == ""
