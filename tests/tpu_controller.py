"""Runs one tpu training job in its own process, as Snakemake's job would: ``python tpu_controller.py ARGS.json``.

The tests kill it with SIGKILL mid-run to play a controller that dies (a laptop going to sleep).
tests/test_tpu.py calls :func:`run_job` directly to run a job in the test's own process.
"""

import json
import logging
import sys

from nanogerman.training import plan_run, train_run


def run_job(job: dict) -> dict:
    """The training job ``job`` describes (config, run, dataset, tokenizer, training, results, manifest, metrics)."""
    return train_run(
        plan_run(job["config"], job["run"]),
        dataset_manifest=job["dataset"],
        tokenizer_dir=job["tokenizer"],
        checkpoint_dir=job["training"]["checkpoint_dir"],
        results_dir=job["results"],
        manifest_out=job["manifest"],
        metrics_out=job["metrics"],
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stdout)
    run_job(json.loads(open(sys.argv[1], encoding="utf-8").read()))
