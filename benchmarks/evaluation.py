"""The cost of evaluating one intermediate checkpoint, against the training time between two checkpoints.

    .venv/bin/snakemake --cores all                      # first: the embedded default run (results/)
    .venv/bin/python benchmarks/evaluation.py            # tiny_neox, its checkpoint at step 150
    .venv/bin/python benchmarks/evaluation.py --run tiny_nanochat --step 0

One checkpoint's evaluation as the workflow runs it (rules/checkpoints.smk): the export with the
logits check (``nanogerman.export.export_run``: MaxText's converter and MaxText's forward pass
side by side, then transformers' logits) and bits per byte on the held-out shard
(``nanogerman.evaluation.evaluate_bits_per_byte``), each timed. The training time between two
checkpoints is ``checkpoint_period`` × the run's median step time (from its metrics.jsonl, so
compilation and evaluation pauses are left out). Also timed: one bare ``import`` of MaxText's
trainer in a fresh Python, the fixed cost each of the export's two MaxText processes pays.
Printed: each part, the ratio, and which part dominates.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# benchmarks/tokenizers.py would shadow the tokenizers package that the export imports
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(REPO / "results"), help="the default run's results_dir")
    parser.add_argument("--run", default="tiny_neox")
    parser.add_argument("--step", type=int, default=150, help="a checkpoint the run saved")
    parser.add_argument("--shard", default="shard_00004", help="the held-out corpus shard for bits per byte")
    options = parser.parse_args()

    from nanogerman.curves import read_metrics
    from nanogerman.evaluation import EvalSettings, ModelSpec, evaluate_bits_per_byte
    from nanogerman.export import export_run
    from nanogerman.manifests import read_train_manifest
    from nanogerman.tokenizer_training import iter_texts

    results = Path(options.results)
    manifest_path = results / "train" / options.run / "train.json"
    if not manifest_path.is_file():
        sys.exit(f"{manifest_path} not found: run `.venv/bin/snakemake --cores all` first")
    manifest = read_train_manifest(manifest_path)
    records = read_metrics(manifest_path.with_name("metrics.jsonl"))
    step_seconds = statistics.median(float(record["perf/step_time_seconds"]) for record in records[2:])
    period = int(next(arg.split("=", 1)[1] for arg in manifest["maxtext_args"] if arg.startswith("checkpoint_period=")))
    training_seconds = period * step_seconds
    tokenizer = results / "tokenizers" / manifest["tokenizer"]["name"]
    texts = list(iter_texts([results / "corpus" / f"{options.shard}.parquet"]))

    import_seconds, _ = timed(
        subprocess.run, [sys.executable, "-c", "import maxtext.trainers.pre_train.train"], check=True, capture_output=True
    )
    with tempfile.TemporaryDirectory(prefix="nanogerman-bench-") as scratch:
        folder = Path(scratch) / "hf"
        export_seconds, report = timed(export_run, manifest_path, tokenizer, folder, step=options.step)
        bpb_seconds, found = timed(
            evaluate_bits_per_byte,
            ModelSpec(f"{options.run}@{options.step}", str(folder)),
            EvalSettings.from_schema(),
            texts,
            Path(scratch) / "bpb.json",
        )
    total = export_seconds + bpb_seconds
    figures = found["results"]["heldout_bpb"]
    parts = {"export with the logits check": export_seconds, "bits per byte": bpb_seconds}
    dominant = max(parts, key=parts.get)
    print(
        f"run {options.run}, checkpoint step {options.step}: max |logit difference| {report['logits_check']['max_abs_diff']:.2g}, "
        f"{figures['bits_per_byte,none']:.3f} bits per byte over {figures['bytes']:,} bytes (uniform {figures['uniform_bits_per_byte']:.3f})"
    )
    print(
        f"  export + logits check  {export_seconds:8.1f} s   (one bare MaxText import in a fresh Python: {import_seconds:.1f} s; "
        "the export starts two such processes side by side)"
    )
    print(f"  bits per byte          {bpb_seconds:8.1f} s   (loading the export in transformers included)")
    print(f"  evaluation, total      {total:8.1f} s")
    print(f"  training between two checkpoints: {period} steps × {step_seconds:.3f} s (median step) = {training_seconds:.1f} s")
    print(f"  ratio evaluation / training: {total / training_seconds:.2f}")
    print(f"  dominated by: {dominant} ({parts[dominant] / total:.0%} of the evaluation)")


if __name__ == "__main__":
    main()
