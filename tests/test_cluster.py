"""profiles/cluster-generic: every job its own detached process with a scrubbed environment and another working directory.

The unit test checks what profiles/cluster-generic/submit.py gives a job; the workflow test
runs the embedded default through Snakemake's cluster-generic executor from a checkout's
root, as a user types it, so every stage must work with nothing but its declared inputs,
params and the installed environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, copy_workflow, snakemake_at_root

SUBMIT = REPO / "profiles" / "cluster-generic" / "submit.py"


def test_submit_runs_the_job_detached_in_a_scrubbed_environment_elsewhere(tmp_path):
    workflow = tmp_path / "workflow"
    workflow.mkdir()
    jobscript = tmp_path / "jobscript.sh"
    report = tmp_path / "seen.json"
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, sys\n"
        "json.dump({'env': dict(os.environ), 'cwd': os.getcwd(), 'sid': os.getsid(0)}, open(sys.argv[1], 'w'))\n",
        encoding="utf-8",
    )
    jobscript.write_text(f"#!/bin/bash\n{sys.executable} {probe} {report}\n", encoding="utf-8")
    env = {**os.environ, "NANOGERMAN_CONTROLLER_ONLY": "1", "PYTHONPATH": "/nowhere"}
    result = subprocess.run(
        [sys.executable, str(SUBMIT), str(jobscript)], cwd=workflow, env=env, capture_output=True, text=True, check=True
    )
    pid, scratch = result.stdout.strip().split(":", 1)
    deadline = time.monotonic() + 30
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = json.loads(report.read_text(encoding="utf-8"))
    assert Path(scratch).parent == workflow / ".snakemake" / "cluster-generic"
    assert seen["cwd"] == scratch and seen["cwd"] != str(workflow)
    assert set(seen["env"]) - {"PWD", "SHLVL", "_", "OLDPWD"} <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR"}
    assert seen["env"]["HOME"] == scratch and seen["env"]["TMPDIR"] == scratch
    assert seen["sid"] == int(pid) != os.getsid(0)  # its own session: not stopped with the submitting process group
    assert (Path(scratch) / "job.log").is_file()


@pytest.mark.slow
def test_the_data_stages_run_through_the_cluster_generic_executor(tmp_path):
    """Corpus, tokenizers, tokenizer evaluation and dataset of the embedded default, each job submitted by submit.py.

    The whole default (training, exports, evaluation, report) ran to its report this way too
    (README, "Where each stage can run"); the suite runs the data stages to keep CI's time.
    """
    root = copy_workflow(tmp_path / "checkout")
    targets = ["results/tokenizer_eval/summary/tokenizer_eval.md", "results/dataset/dataset.json"]
    result = snakemake_at_root(root, "--profile", "profiles/cluster-generic", *targets, timeout=1500)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert all((root / target).is_file() for target in targets), output[-2000:]
    submitted = output.count("Submitted job ")
    jobs = sum(1 for line in output.splitlines() if line.startswith("rule "))
    rules = {line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("rule ")}
    assert {"corpus_shard", "tokenizer_train", "tokenizer_eval", "dataset_part", "dataset_assemble"} <= rules, rules
    assert jobs >= 15 and submitted == jobs, output[-3000:]  # every job but the local rules went through submit.py
    scratch = list((root / ".snakemake" / "cluster-generic").iterdir())
    assert len(scratch) == submitted and all((folder / "job.log").is_file() for folder in scratch)
