"""profiles/cluster-generic: every job its own detached process with a scrubbed environment and another working directory.

What profiles/cluster-generic/submit.py gives a job. The embedded default runs through the
cluster-generic executor in tests/test_workflow.py (its data stages and first run's chain; README
command 1 then finishes the workflow on the local executor).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

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
