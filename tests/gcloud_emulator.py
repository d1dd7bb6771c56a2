"""An emulated Cloud TPU VM behind a ``gcloud`` stand-in, for the tpu backend's tests.

:func:`install` puts an executable ``gcloud`` first on ``PATH`` that runs this file. It keeps
real state in ``GCLOUD_EMULATOR_DIR``:

- ``queued-resources create/describe/delete`` keep each queued resource in ``qr/<name>.json``.
  A new one passes through the states listed in ``settings.json``'s ``provisioning`` (one per
  ``describe``), then becomes ``final`` (``ACTIVE`` unless set, e.g. ``FAILED`` with ``failed``).
  ``delete`` kills the workers' processes and wipes their folders (a new slice has new disks).
- ``tpu-vm scp`` copies into each worker's folder ``<workers>/<name>/<i>/`` (``--recurse`` for folders).
- ``tpu-vm ssh --worker=all --command=CMD`` runs ``bash -c CMD`` in each worker's folder with
  ``HOME`` set to it and ``TPU_WORKER_ID=<i>``, so the quoting meets a real shell. Processes the
  command starts detached keep running after the call returns.
- The environment setup is skipped: the workers' ``python3`` is a shim whose ``-m pip install``
  and ``-m uv pip install`` do nothing and whose ``-m uv venv DIR`` makes a venv that sees this
  project's ``.venv`` packages (no download). Everything else is the real command.
- Hooks: :func:`preempt` kills the workers' processes and flips the queued resource to
  SUSPENDED (or FAILED); :func:`drop_next_ssh` makes the next ssh call exit 255 before or after
  running its command, with the slice still ACTIVE. ``settings.json``'s ``script`` scripts the
  answers of ``create`` (e.g. a quota error), replacing the emulation for that call.

Every call is appended to ``calls.jsonl``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("GCLOUD_EMULATOR_DIR", "."))
SHIM = f"""#!/bin/bash
# python3 on an emulated TPU worker: environment installs are skipped, a venv sees the project's packages
if [ "$1 $2" = "-m pip" ]; then echo "emulator: skipped pip install"; exit 0; fi
if [ "$1 $2 $3" = "-m uv pip" ]; then echo "emulator: skipped uv pip install"; exit 0; fi
if [ "$1 $2 $3" = "-m uv venv" ]; then exec {shlex.quote(sys.executable)} {shlex.quote(__file__)} make-venv "${{@: -1}}"; fi
exec {shlex.quote(sys.executable)} "$@"
"""


def _load(path: Path, default):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


def _save(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data), encoding="utf-8")
    os.replace(temporary, path)


def settings() -> dict:
    return _load(STATE / "settings.json", {})


def worker_homes(name: str) -> list[Path]:
    root = Path(settings()["workers_root"]) / name
    return [root / str(index) for index in range(int(settings().get("workers", 1)))]


def kill_workers(name: str) -> None:
    """SIGKILL every process group a worker started detached (their pid files), as a lost VM would."""
    for home in worker_homes(name):
        for pid_file in home.glob("nanogerman/runs/*/supervisor.pid"):
            try:
                os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass


def _flag(args: list[str], name: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _scripted(kind: str) -> dict | None:
    script = settings().get("script", {}).get(kind)
    if not script:
        return None
    counters = _load(STATE / "counters.json", {})
    index = counters.get(kind, 0)
    counters[kind] = index + 1
    _save(STATE / "counters.json", counters)
    return script[min(index, len(script) - 1)]


def queued_resources(verb: str, name: str) -> int:
    path = STATE / "qr" / f"{name}.json"
    if verb == "create":
        answer = _scripted("create")
        if answer is not None:
            sys.stderr.write(answer.get("stderr", ""))
            return int(answer.get("rc", 0))
        if path.exists():
            sys.stderr.write(f"ERROR: (gcloud.compute.tpus.queued-resources.create) ALREADY_EXISTS: {name}\n")
            return 1
        for home in worker_homes(name):
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)  # a new slice: empty disks
        config = settings()
        _save(
            path,
            {
                "state": "ACCEPTED",
                "pending": list(config.get("provisioning", [])),
                "final": config.get("final", "ACTIVE"),
                "failed": config.get("failed", ""),
            },
        )
        print(f"Create request issued for: [{name}]")
        return 0
    if not path.exists():
        sys.stderr.write(f"ERROR: (gcloud.compute.tpus.queued-resources.{verb}) NOT_FOUND: Resource '{name}' was not found\n")
        return 1
    data = _load(path, {})
    if verb == "describe":
        if data["state"] not in ("ACTIVE", "SUSPENDED", "FAILED"):
            data["state"] = data["pending"].pop(0) if data["pending"] else data["final"]
            _save(path, data)
        state = {"state": data["state"]}
        if data["state"] == "FAILED" and data.get("failed"):
            state["failedData"] = {"error": {"code": 8, "message": data["failed"]}}
        print(json.dumps({"name": name, "state": state}))
        return 0
    if verb == "delete":
        kill_workers(name)
        for home in worker_homes(name):  # the disks go; kept aside under a new name for the tests to read
            if home.exists():
                home.rename(home.with_name(f"{home.name}.deleted-{time.time_ns()}"))
        path.unlink()
        return 0
    return 2


def _active(name: str) -> bool:
    return _load(STATE / "qr" / f"{name}.json", {}).get("state") == "ACTIVE"


def ssh(name: str, args: list[str]) -> int:
    command = _flag(args, "--command")
    drop = _load(STATE / "drop.json", [])
    when = drop.pop(0) if drop else "none"
    _save(STATE / "drop.json", drop)
    if when == "before" or not _active(name):
        sys.stderr.write("ssh: connect to host 10.0.0.2 port 22: Connection timed out\n")
        return 255
    shim = STATE / "shim"
    codes = []
    for index, home in enumerate(worker_homes(name)):
        env = {**os.environ, "HOME": str(home), "TPU_WORKER_ID": str(index), "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
        codes.append(subprocess.run(["bash", "-c", command], cwd=home, env=env).returncode)
    if when == "after":
        sys.stderr.write("Connection to 10.0.0.2 closed by remote host.\n")
        return 255
    return max(codes)


def scp(args: list[str]) -> int:
    positional = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--project", "--zone"):
            skip = True
        elif not arg.startswith("--"):
            positional.append(arg)
    *sources, destination = positional
    name, remote = destination.split(":", 1)
    if not _active(name):
        sys.stderr.write("ssh: connect to host 10.0.0.2 port 22: Connection timed out\n")
        return 255
    for home in worker_homes(name):
        target = home / remote
        for source in map(Path, sources):
            if source.is_dir():
                if "--recurse" not in args:
                    sys.stderr.write(f"ERROR: {source} is a directory; use --recurse\n")
                    return 1
                shutil.copytree(source, target / source.name, dirs_exist_ok=True)
            else:
                shutil.copy2(source, target / source.name)
    return 0


def make_venv(target: str) -> int:
    """A venv (no pip) whose site-packages also reads this project's .venv packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", target], check=True)
    project = next(path for path in sys.path if path.endswith("site-packages"))
    site = next(Path(target).glob("lib/python3*/site-packages"))
    (site / "project_venv.pth").write_text(f"import site; site.addsitedir({project!r})\n", encoding="utf-8")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["make-venv"]:
        return make_venv(argv[1])
    with open(STATE / "calls.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(["gcloud", *argv]) + "\n")
    if argv[:3] == ["compute", "tpus", "queued-resources"]:
        return queued_resources(argv[3], argv[4])
    if argv[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
        return ssh(argv[4], argv[5:])
    if argv[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
        return scp(argv[4:])
    sys.stderr.write(f"emulator: unsupported gcloud call {argv}\n")
    return 2


# --- used by the tests -------------------------------------------------------------------------


def install(bin_dir: Path, state_dir: Path, workers_root: Path, **options) -> Path:
    """Write ``bin_dir/gcloud``, the workers' python3 shim and ``settings.json``; returns the executable."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "shim").mkdir(parents=True, exist_ok=True)
    _save(state_dir / "settings.json", {"workers_root": str(workers_root), **options})
    for path, text in (
        (
            bin_dir / "gcloud",
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "import gcloud_emulator\nsys.exit(gcloud_emulator.main(sys.argv[1:]))\n",
        ),
        (state_dir / "shim" / "python3", SHIM),
    ):
        path.write_text(text, encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir / "gcloud"


def configure(state_dir: Path, **options) -> None:
    _save(state_dir / "settings.json", {**_load(state_dir / "settings.json", {}), **options})
    (state_dir / "counters.json").unlink(missing_ok=True)


def preempt(state_dir: Path, name: str, state: str = "SUSPENDED") -> None:
    """The slice is lost: its workers' processes die, the queued resource turns SUSPENDED (or FAILED)."""
    global STATE
    STATE = state_dir
    kill_workers(name)
    path = state_dir / "qr" / f"{name}.json"
    _save(path, {**_load(path, {}), "state": state})


def drop_next_ssh(state_dir: Path, *when: str) -> None:
    """The next ssh calls exit 255 ('before': without running; 'after': after running), the slice staying ACTIVE."""
    _save(state_dir / "drop.json", list(when))


def cleanup(state_dir: Path) -> None:
    """Kill every worker process of every queued resource (test teardown)."""
    global STATE
    STATE = state_dir
    for path in (state_dir / "qr").glob("*.json") if (state_dir / "qr").is_dir() else []:
        kill_workers(path.stem)
    root = Path(settings().get("workers_root", state_dir / "none"))
    for pid_file in root.glob("*/*/nanogerman/runs/*/supervisor.pid") if root.is_dir() else []:
        try:
            os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def recorded_calls(state_dir: Path) -> list[list[str]]:
    path = state_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def wait_for(condition, timeout: float = 120, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("condition not met")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
