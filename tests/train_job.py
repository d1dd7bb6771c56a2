"""Run one training job the way the train_run rule does, as a separate process that a test can kill.

    python tests/train_job.py SPEC.json

SPEC holds ``config`` (a config with a ``training`` section), ``run`` (the run's name),
``dataset`` (the dataset manifest), ``tokenizer`` (the tokenizer folder) and ``results``
(the results folder). MaxText's output and the job's own log lines go to stdout, one per
line as they come, so the caller can act on them (for example kill the job after a checkpoint).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from nanogerman.job import terminate_on_sigterm
from nanogerman.training import plan_run, train_run


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
    terminate_on_sigterm()
    config, results = spec["config"], Path(spec["results"])
    train_run(
        plan_run(config, spec["run"]),
        dataset_manifest=spec["dataset"],
        tokenizer_dir=spec["tokenizer"],
        checkpoint_dir=config["training"].get("checkpoint_dir"),
        results_dir=results,
        manifest_out=results / "train" / spec["run"] / "train.json",
        metrics_out=results / "train" / spec["run"] / "metrics.jsonl",
    )


if __name__ == "__main__":
    main(sys.argv[1])
