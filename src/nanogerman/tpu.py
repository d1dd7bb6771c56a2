"""``python -m nanogerman.tpu``: regenerate the TPU workers' pinned requirements, or stop a detached tpu run.

    .venv/bin/python -m nanogerman.tpu > envs/tpu-requirements.txt
    .venv/bin/python -m nanogerman.tpu stop <queued-resource> --project P --zone Z --run-dir gs://…/<run_name>

The tpu training backend itself is :mod:`nanogerman.tpu_run`; the ``gcloud`` side is
:mod:`nanogerman.tpu_gcloud`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from nanogerman.errors import StageError
from nanogerman.job import run_streaming
from nanogerman.provenance import PROJECT_ROOT
from nanogerman.tpu_env import tpu_requirements
from nanogerman.tpu_gcloud import QueuedResource, TpuTarget, ssh_args, stop_command

log = logging.getLogger(__name__)


# --- command line: regenerate the workers' requirements, stop a detached run -------------------


def stop_run(target: TpuTarget, run_dir: str | None, *, keep_slice: bool) -> None:
    """Stop the detached training on every worker (records say 'stopped'), then delete the queued resource."""
    resource = QueuedResource(target, {"wait_timeout_minutes": 0, "max_restarts": 0, "poll_seconds": 0}, on_line=print)
    state, _ = resource.state()
    if state == "ACTIVE" and run_dir:
        returncode = run_streaming(ssh_args(target, stop_command(run_dir)), on_line=print)
        if returncode != 0:
            log.warning("stopping the run on the workers exited with code %d", returncode)
    if not keep_slice and state is not None:
        resource.delete()


def main(argv: list[str]) -> int:
    if not argv:  # regenerate envs/tpu-requirements.txt
        print(
            tpu_requirements(
                (PROJECT_ROOT / "requirements.lock").read_text(encoding="utf-8"),
                (PROJECT_ROOT / "envs" / "maxtext-runtime.txt").read_text(encoding="utf-8"),
            ),
            end="",
        )
        return 0
    parser = argparse.ArgumentParser(prog="python -m nanogerman.tpu", description="Stop a detached tpu run and delete its slice.")
    commands = parser.add_subparsers(dest="command", required=True)
    stop = commands.add_parser("stop", help="stop the training on every worker, then delete the queued resource")
    stop.add_argument("queued_resource", help="the queued resource's name (in the job's log and train.json's backend_details)")
    stop.add_argument("--project", required=True)
    stop.add_argument("--zone", required=True)
    stop.add_argument("--run-dir", help="<checkpoint_dir>/<run_name> of the run (without it the slice is only deleted)")
    stop.add_argument("--keep-slice", action="store_true", help="stop the training but leave the queued resource")
    options = parser.parse_args(argv)
    target = TpuTarget(options.queued_resource, options.project, options.zone, "", "", "")  # what stop_run needs
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        stop_run(target, options.run_dir, keep_slice=options.keep_slice)
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
