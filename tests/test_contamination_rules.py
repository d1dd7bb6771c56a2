"""The contamination and comparisons rules executed by Snakemake on tiny inputs (no training: stub results stand in).

Only these rules may run (``--allowed-rules``): the corpus shards and the two models' lm-eval results are placed
where the workflow expects them, so Snakemake takes them as given.
"""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import REPO, SAMPLE_DIR

TASK = "lambada_openai_mt_de"
RULES = ("contamination_shard", "contamination_merge", "contamination_task", "contamination_summary", "eval_comparisons")


def _place_inputs(workdir, planted: str) -> None:
    """The sample's training shards as results/corpus/ (one with ``planted`` in a document), and two models' results."""
    corpus = workdir / "results" / "corpus"
    corpus.mkdir(parents=True)
    for index in range(4):
        name = f"shard_{index:05d}.parquet"
        if index == 2:
            texts = pq.read_table(SAMPLE_DIR / name).column("text").to_pylist()
            texts[0] += "\n\nAus einem Quiz: " + planted
            pq.write_table(pa.table({"text": texts}), corpus / name)
        else:
            shutil.copy(SAMPLE_DIR / name, corpus / name)
    rng = np.random.default_rng(5)
    weak = rng.random(300) < 0.25
    strong = weak | (rng.random(300) < 0.4)
    for model, arc in (("tiny_nanochat", weak), ("tiny_neox", strong)):
        items = {
            "arc_de": {"doc_id": list(range(300)), "acc": arc.astype(float).tolist()},
            TASK: {"doc_id": list(range(300)), "acc": weak.astype(float).tolist()},  # the same answers: no difference
        }
        folder = workdir / "results" / "eval" / model
        folder.mkdir(parents=True)
        (folder / "lm_eval.json").write_text(json.dumps({"results": {}, "nanogerman": {"items": items}}))


def test_contamination_and_comparison_rules_run_through_snakemake(tmp_path, base_config, snakemake_run):
    items = [json.loads(line)["text"] for line in (REPO / "tests/data/tasks" / TASK / "test.jsonl").read_text().splitlines()]
    _place_inputs(tmp_path, items[2])
    base_config["evaluation"].update(
        tasks=[TASK],
        local_data={TASK: str(REPO / "tests/data/tasks" / TASK)},
        contamination={"enabled": True, "clean_subsets": True},
    )
    base_config["evaluation"]["next_passage"] = {"enabled": False}
    base_config["evaluation"]["checkpoints"]["tasks"] = ["heldout_bpb"]
    targets = ["results/contamination/summary.md", "results/eval/comparisons.csv"]
    result = snakemake_run(tmp_path, base_config, *targets, "--allowed-rules", *RULES)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for rule, count in (("contamination_shard", 4), ("contamination_merge", 1), ("contamination_task", 1)):
        assert len(re.findall(rf"^(?:local)?rule {rule}:$", output, re.MULTILINE)) == count, (rule, output[-4000:])

    contamination = tmp_path / "results" / "contamination"
    assert sorted(path.name for path in (contamination / "ngrams").glob("*.npy")) == [f"shard_{i:05d}.npy" for i in range(4)]
    merged = json.loads((contamination / "corpus_ngrams.json").read_text())
    assert merged["n"] == 13 and merged["ngrams"] == len(np.load(contamination / "corpus_ngrams.npy")) > 1000
    task = json.loads((contamination / "tasks" / f"{TASK}.json").read_text())
    assert (task["documents"], task["contaminated_ids"]) == (4, ["2"])  # the planted item, and only it
    summary = (contamination / "summary.md").read_text()
    assert f"| {TASK} | 4 | 1 | 25.0 % |\n| {TASK}_clean | 3 | 0 | 0.0 % |" in summary  # clean_subsets: the subset's row

    with open(tmp_path / "results" / "eval" / "comparisons.csv", encoding="utf-8") as handle:
        rows = {(row["task"], row["metric"]): row for row in csv.DictReader(handle)}
    assert set(rows) == {("arc_de", "acc"), (TASK, "acc")}
    assert (rows["arc_de", "acc"]["first"], rows["arc_de", "acc"]["second"]) == ("tiny_nanochat", "tiny_neox")
    assert rows["arc_de", "acc"]["significant"] == "True" and float(rows["arc_de", "acc"]["difference"]) < 0
    assert rows[TASK, "acc"]["significant"] == "False" and float(rows[TASK, "acc"]["p_value"]) == 1.0
    assert "| tiny_nanochat | tiny_neox | arc_de | acc |" in (tmp_path / "results" / "eval" / "comparisons.md").read_text()
