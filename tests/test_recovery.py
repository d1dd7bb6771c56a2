"""kill -9 at every stage, then the README's recovery command: the run completes and leaves no temporary file.

One sequence of snakemake runs on the smallest config that has the four stages (one
tokenizer, the dataset, one 4-step run, its export; no smoke job, no evaluation):
each run is killed with SIGKILL, snakemake and its jobs together (a machine going
down), as soon as a stage not yet killed is under way; the next run is the README's
recovery command (`snakemake --unlock`, then the same command again, with nothing
else: the workflow profile profiles/default turns on rerun-incomplete). It runs
outside the repository, with its own TMPDIR, so the profile must be found beside the
Snakefile and the scratch folders can be counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_DIR, VENV_BIN, default_config, snakemake_command

from nanogerman.training import committed_steps

TARGET = "results/hf/tiny"


def recovery_config() -> dict:
    config = default_config()
    config["corpus"]["location"] = str(SAMPLE_DIR)
    config["tokenizers"] = [{"name": "neox", "kind": "neox", "vocab_size": 512, "shards": "train"}]
    config.pop("tokenizer_eval", None)
    config["training"]["smoke"] = {"enabled": False}
    config["training"]["defaults"].update(steps=4, checkpoint_period=2, per_device_batch_size=2, max_target_length=64)
    config["training"]["runs"] = [{"name": "tiny", "tokenizer": "neox"}]
    return config


def stage_under_way(results: Path, scratch: Path) -> dict:
    """Which stages have a job running now whose output is not finished (what a kill there interrupts)."""

    def started(log: Path, output: Path) -> bool:
        return log.is_file() and not output.exists()

    parts = results / "logs" / "dataset"
    checkpoints = list((results / "checkpoints").glob("tiny-*/checkpoints"))
    return {
        "tokenizer": started(results / "logs" / "tokenizers" / "neox.log", results / "tokenizers" / "neox"),
        "dataset part": any(
            started(log, results / "dataset" / "parts" / log.stem.removeprefix("part_")) for log in parts.glob("part_shard_*.log")
        ),
        "train": bool(checkpoints and committed_steps(checkpoints[0]))
        and not (results / "train" / "tiny" / "train.json").exists(),
        "export": bool(list((results / "hf").glob(".tiny.tmp-*")) and list(scratch.glob("nanogerman-export-*"))),
    }


@pytest.mark.slow
def test_kill_9_at_every_stage_then_the_readme_command_recovers(tmp_path):
    workdir, scratch = tmp_path / "work", tmp_path / "tmp"
    workdir.mkdir()
    scratch.mkdir()
    snakemake = snakemake_command(workdir, recovery_config())
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(scratch)}
    results = workdir / "results"
    killed: list[str] = []
    returncode = None
    for attempt in range(6):
        if attempt:  # the README: `snakemake --unlock` once, then the same command
            subprocess.run([*snakemake, "--unlock"], cwd=tmp_path, env=env, capture_output=True, check=True)
        output = tmp_path / f"snakemake-{attempt}.log"
        with open(output, "w", encoding="utf-8") as handle:
            process = subprocess.Popen(
                [snakemake[0], TARGET, *snakemake[1:], "--cores", "2"],
                cwd=tmp_path,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            while process.poll() is None:
                running = [stage for stage, yes in stage_under_way(results, scratch).items() if yes and stage not in killed]
                if running:
                    os.killpg(process.pid, signal.SIGKILL)  # snakemake, its jobs and MaxText at once
                    killed.append(running[0])
                    break
                time.sleep(0.02)
        finally:
            if process.poll() is None and not killed[attempt:]:  # the test itself was interrupted
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if len(killed) == attempt:  # not killed: it ran to the end
            returncode = process.returncode
            break
    assert sorted(killed) == ["dataset part", "export", "tokenizer", "train"], killed
    # found beside the Snakefile (the runs start outside the repository): what turns on rerun-incomplete
    assert f"Using workflow specific profile {REPO / 'profiles' / 'default'}" in (tmp_path / "snakemake-0.log").read_text()
    assert returncode == 0, output.read_text()[-3000:]
    assert (results / "hf" / "tiny" / "config.json").is_file()
    records = [json.loads(line) for line in (results / "train" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [0, 1, 2, 3]  # every step exactly once, across the kill
    assert [str(path.relative_to(results)) for path in results.rglob("*tmp*")] == []  # ours (.tmp-*) and orbax's (*-tmp-*)
    assert sorted(path.name for path in scratch.iterdir() if path.name.startswith("nanogerman-")) == []
