"""The whole workflow on the embedded default config, as README command 1 runs it."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_default_workflow_end_to_end(tmp_path, base_config, snakemake_run):
    result = snakemake_run(tmp_path, base_config)
    assert result.returncode == 0, result.stderr[-3000:]
    results = tmp_path / "results"
    corpus = json.loads((results / "corpus" / "corpus.json").read_text())
    assert corpus["shard_sets"]["train"]["shards"] == 4
    again = snakemake_run(tmp_path, base_config, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
