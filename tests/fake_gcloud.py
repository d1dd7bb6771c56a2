"""A stand-in for the Google Cloud CLI (``gcloud``) for the tpu backend's tests.

It records every call and answers from a scripted scenario, so a test can play a
normal run, a preemption, a failed creation or a quota error, and then assert the
exact calls. :func:`install` puts an executable ``gcloud`` that runs this file first
on ``PATH``.

The scenario is ``<FAKE_GCLOUD_DIR>/scenario.json``: ``{kind: [response, …]}``. The
n-th call of a kind gets the n-th response, the last one repeats; kinds without a
script succeed silently. Kinds: ``create``, ``describe``, ``delete`` (queued
resources), ``ssh-mkdir``, ``ssh-setup``, ``ssh-train`` (by what the remote command
does), ``ssh`` (anything else) and ``scp``. A response may have ``rc``, ``stdout``,
``stderr``, ``lines`` (printed one by one, like a remote command's output) and, for
``describe``, ``state`` (``NOT_FOUND`` makes it fail the way gcloud does) and
``failed`` (the failure message of a FAILED queued resource). Calls are appended to
``calls.jsonl`` (one JSON list of arguments per line).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path


def kind_of(argv: list[str]) -> str:
    words = argv[:5]
    if words[:3] == ["compute", "tpus", "queued-resources"]:
        return argv[3]
    if words[:3] == ["compute", "tpus", "tpu-vm"] and argv[3] == "ssh":
        command = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--command=")), "")
        if "maxtext.trainers.pre_train.train" in command:
            return "ssh-train"
        if " uv " in command:
            return "ssh-setup"
        if command.startswith("mkdir"):
            return "ssh-mkdir"
        return "ssh"
    if words[:3] == ["compute", "tpus", "tpu-vm"] and argv[3] == "scp":
        return "scp"
    return "unknown"


def main(argv: list[str]) -> int:
    folder = Path(os.environ["FAKE_GCLOUD_DIR"])
    with open(folder / "calls.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(["gcloud", *argv]) + "\n")
    scenario = json.loads((folder / "scenario.json").read_text(encoding="utf-8"))
    counters_path = folder / "counters.json"
    counters = json.loads(counters_path.read_text(encoding="utf-8")) if counters_path.exists() else {}
    kind = kind_of(argv)
    index = counters.get(kind, 0)
    counters[kind] = index + 1
    counters_path.write_text(json.dumps(counters), encoding="utf-8")
    script = scenario.get(kind) or [{}]
    response = script[min(index, len(script) - 1)]
    if kind == "describe" and "state" in response:
        if response["state"] == "NOT_FOUND":
            sys.stderr.write(f"ERROR: (gcloud.compute.tpus.queued-resources.describe) NOT_FOUND: Resource '{argv[4]}' was not found\n")
            return 1
        state = {"state": response["state"]}
        if response.get("failed"):
            state["failedData"] = {"error": {"code": 8, "message": response["failed"]}}
        print(json.dumps({"name": argv[4], "state": state}))
        return 0
    for line in response.get("lines", []):
        print(line, flush=True)
    sys.stdout.write(response.get("stdout", ""))
    sys.stderr.write(response.get("stderr", ""))
    return int(response.get("rc", 0))


def install(bin_dir: Path, state_dir: Path, scenario: dict) -> Path:
    """Write ``bin_dir/gcloud`` (runs this file with this Python) and the scenario; returns the executable."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "scenario.json").write_text(json.dumps(scenario), encoding="utf-8")
    executable = bin_dir / "gcloud"
    executable.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import fake_gcloud\nsys.exit(fake_gcloud.main(sys.argv[1:]))\n",
        encoding="utf-8",
    )
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return executable


def recorded_calls(state_dir: Path) -> list[list[str]]:
    path = state_dir / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
