"""profiles/cluster-generic: every job its own detached process with a scrubbed environment and another working directory.

The unit test checks what profiles/cluster-generic/submit.py gives a job; the workflow test
runs the whole embedded default through Snakemake's cluster-generic executor from a checkout's
root, as a user types it, so every stage (data, training, export, evaluation, report) must work
with nothing but its declared inputs, params and the installed environment.
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
def test_the_embedded_default_runs_through_the_cluster_generic_executor(tmp_path):
    """The whole embedded default, every job but the local rules submitted by submit.py, from a checkout's root as the
    README's cluster command is typed; README command 1 afterwards finds nothing to do (both executors plan the same)."""
    root = copy_workflow(tmp_path / "checkout")
    result = snakemake_at_root(root, "--profile", "profiles/cluster-generic", timeout=1800)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert (root / "results" / "report" / "overview.md").is_file(), output[-2000:]
    submitted = output.count("Submitted job ")
    jobs = [line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("rule ")]
    local = [line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("localrule ")]
    stages = {"corpus_shard", "tokenizer_train", "tokenizer_eval", "dataset_part", "dataset_assemble", "train_run"}
    stages |= {"export_hf", "checkpoint_export", "checkpoint_evaluate", "eval_lm_eval", "eval_bits_per_byte"}
    assert stages <= set(jobs), sorted(set(jobs))
    assert len(jobs) >= 30 and submitted == len(jobs), output[-3000:]  # every job but the local rules went through submit.py
    assert "results_report" in local and "train_run" not in local
    scratch = list((root / ".snakemake" / "cluster-generic").iterdir())
    assert len(scratch) == submitted and all((folder / "job.log").is_file() for folder in scratch)
    again = snakemake_at_root(root, "--cores", "all", "--dry-run")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, (again.stdout + again.stderr)[-3000:]
