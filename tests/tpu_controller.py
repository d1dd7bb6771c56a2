"""Runs one tpu training job in its own process, as Snakemake's job would: ``python tpu_controller.py ARGS.json``.

The tests kill it with SIGKILL mid-run to play a controller that dies (a laptop going to sleep).
"""

import json
import logging
import sys

from nanogerman.training import plan_run, train_run

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stdout)
    spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
    train_run(
        plan_run(spec["config"], spec["run"]),
        dataset_manifest=spec["dataset"],
        tokenizer_dir=spec["tokenizer"],
        checkpoint_dir=spec["training"]["checkpoint_dir"],
        results_dir=spec["results"],
        manifest_out=spec["manifest"],
        metrics_out=spec["metrics"],
    )
