"""Shared fixtures: the repository's paths, a Snakemake runner, the real corpus, a GCS emulator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# TensorFlow 2.21 followed by torch._dynamo (which transformers loads with its PyTorch models)
# in one process crashes with a segmentation fault; the other order works. The workflow never
# loads both in one process (each rule is its own process), but this test process does.
import torch._dynamo  # noqa: E402,F401  (before any test imports TensorFlow)
import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "resources" / "german_sample"
ELTEC_DIR = REPO.parent / "shared" / "corpus" / "eltec-deu"
VENV_BIN = Path(sys.executable).parent

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers such as hub_stand_in


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def eltec_dir() -> Path:
    """The real German corpus beside the project; tests using it are skipped, with the reason, when it is absent."""
    if not (ELTEC_DIR / "shard_00000.parquet").is_file():
        pytest.skip(f"real corpus not found at {ELTEC_DIR} (see ../shared/README.md)")
    return ELTEC_DIR


def default_config() -> dict:
    with open(REPO / "config" / "config.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def set_key(path: list, value):
    """A config change for the malformed-config tables: set the value at ``path`` (keys and list indices)."""

    def change(config):
        target = config
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


def delete_key(path: list):
    """A config change for the malformed-config tables: delete the key at ``path``."""

    def change(config):
        target = config
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return change


@pytest.fixture
def base_config() -> dict:
    """The embedded default config with absolute paths, ready to modify in a test."""
    config = default_config()
    config["corpus"]["location"] = str(SAMPLE_DIR)
    return config


def snakemake_command(workdir: Path, config: dict | None) -> list[str]:
    """``snakemake -s <repo>/Snakefile --directory WORKDIR [--configfile WORKDIR/config.yaml]``, ``config`` written there.

    Put targets and options right after ``[0]``: ``--configfile`` takes several values and would swallow them.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    command = [str(VENV_BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    if config is not None:
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        command += ["--configfile", str(config_path)]
    return command


def dry_run_jobs(output: str) -> dict[str, list[str]]:
    """rule -> the sorted wildcard lines ('' for none) of the jobs a ``snakemake -n`` output plans."""
    import re

    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        match = re.match(r"(?:local)?rule (\w+):", block)
        wildcards = re.search(r"^    wildcards: (.*)$", block, re.MULTILINE)
        if match:
            jobs.setdefault(match.group(1), []).append(wildcards.group(1) if wildcards else "")
    return {rule: sorted(lines) for rule, lines in jobs.items()}


def run_snakemake(workdir: Path, config: dict | None, *args: str, env: dict | None = None, timeout: float = 900):
    """Run the workflow in ``workdir`` with ``config`` written to ``workdir/config.yaml``.

    Returns the CompletedProcess (stdout and stderr captured as text); never raises on failure.
    """
    base = snakemake_command(workdir, config)
    command = [base[0], *args, "--cores", "2", *base[1:]]
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = f"{VENV_BIN}{os.pathsep}{full_env.get('PATH', '')}"
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture
def snakemake_run():
    return run_snakemake


def stub_run_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A tokenizer folder (stats only) and a dataset manifest: enough for a run's plan and job context, not to train."""
    tokenizer = tmp_path / "tokenizers" / "tok"
    tokenizer.mkdir(parents=True)
    (tokenizer / "tokenizer.json").write_text("{}")
    (tokenizer / "stats.json").write_text(
        json.dumps({"vocab_size": 2048, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0})
    )
    dataset = tmp_path / "dataset.json"
    dataset.write_text(
        json.dumps({"name": "d", "version": "1.0.0", "checksums": {}, "maxtext": {"dataset_type": "tfds", "dataset_path": "/d"}})
    )
    return tokenizer, dataset


def snakemake_at_root(root: Path, *args: str, env: dict | None = None, timeout: float = 900):
    """Run ``snakemake ARGS`` with ``root`` as the working directory and nothing else added, as a user types it there.

    ``root`` is the repository itself or a copy made by :func:`copy_workflow`. Returns the CompletedProcess.
    """
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = f"{VENV_BIN}{os.pathsep}{full_env.get('PATH', '')}"
    return subprocess.run(
        [str(VENV_BIN / "snakemake"), *args], cwd=root, capture_output=True, text=True, env=full_env, timeout=timeout
    )


def copy_workflow(destination: Path) -> Path:
    """A copy of the repository's workflow files (Snakefile, rules, scripts, config, profiles, resources) to edit in a test."""
    import shutil

    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "Snakefile", destination / "Snakefile")
    for folder in ("rules", "scripts", "config", "profiles", "resources", "envs"):
        shutil.copytree(REPO / folder, destination / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """A gcp-storage-emulator on loopback; yields its endpoint URL. Sets STORAGE_EMULATOR_HOST for this process."""
    port = _free_port()
    process = subprocess.Popen(
        [str(VENV_BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("gcp-storage-emulator did not start")
            time.sleep(0.1)
    previous = {name: os.environ.get(name) for name in ("STORAGE_EMULATOR_HOST", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")}
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    try:
        yield endpoint
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        process.terminate()
        process.wait(timeout=10)


# --- the order the files start in ----------------------------------------------------------------
# With `-n auto --dist loadfile --no-loadscope-reorder` (pyproject.toml) each file runs on one
# worker, in this order: the files that take minutes start first (longest first), so that the
# many short files fill in beside them instead of one long file starting last on an otherwise
# idle machine. Each worker is handed two files at the start: a short one goes second, so that
# it, not a long one, waits behind the end-to-end run.
FIRST = (
    "test_workflow.py",  # the whole embedded default: cluster-generic, then README command 1 (minutes)
    "test_exactly_once.py",
    "test_atomic.py",  # short: queued behind test_workflow.py on its worker
    "test_training.py",
    "test_evaluation.py",
    "test_tpu.py",
    "test_export.py",
    "test_recovery.py",
)


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    rank = {name: index for index, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: the other files keep their order
