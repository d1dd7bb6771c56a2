#!/usr/bin/env python3
"""Submit one Snakemake job script the way a batch system would, for `--profile profiles/cluster-generic`.

Snakemake's cluster-generic executor calls this with the job script's path as the last
argument and reads a job id from standard output. Like a node of a cluster, the job
runs in a fresh process, detached from Snakemake, with a scrubbed environment (only
PATH, HOME, LANG and TMPDIR) and in a different working directory (a scratch folder of
its own under .snakemake/cluster-generic/; the job script changes to the workflow
directory itself, as on a cluster with a shared file system). A job that works here needs nothing but its declared inputs,
its params and the installed environment: no variable, file or state of the
controlling process. Output goes to <scratch>/job.log. Snakemake learns the outcome
from the marker files the job script writes.

This is a template: for slurm or kubernetes, replace the Popen call below with
`sbatch`/`kubectl` (or use snakemake-executor-plugin-slurm / -kubernetes /
-googlebatch; see README "Where each stage can run").
"""

import os
import subprocess
import sys
import tempfile

KEPT = ("PATH", "LANG", "LC_ALL")


def main(jobscript: str) -> None:
    parent = os.path.join(".snakemake", "cluster-generic")
    os.makedirs(parent, exist_ok=True)
    scratch = os.path.abspath(tempfile.mkdtemp(prefix="job-", dir=parent))
    env = {name: os.environ[name] for name in KEPT if name in os.environ}
    env.update(HOME=scratch, TMPDIR=scratch)
    with open(os.path.join(scratch, "job.log"), "wb") as log:
        process = subprocess.Popen(
            ["/bin/bash", os.path.abspath(jobscript)],
            cwd=scratch,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"{process.pid}:{scratch}")


if __name__ == "__main__":
    main(sys.argv[-1])
