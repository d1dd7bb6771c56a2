"""Benchmark: the dataset stage with 1 and 2 workers against a bare parquet-read-and-serialize loop.

Builds the TFDS dataset from the ELTeC-deu shards (train: shards 0-4, validation: 5)
the way the workflow does, i.e. one ``write_part`` per corpus shard (Snakemake runs
these as independent jobs; here a process pool with 1 and then 2 workers stands in
for ``--cores 1`` and ``--cores 2``), then ``assemble_dataset``. The baseline, in the
same run, is the bare loop a hand-written converter would be: read each shard with
pyarrow and write a ``tf.train.Example`` per row with ``tf.io.TFRecordWriter``, in
one process. Prints documents/s, MB/s (UTF-8 text), the speedup of the second
worker and the ratio of each build to the baseline.

    .venv/bin/python benchmarks/dataset.py [--corpus ../shared/corpus/eltec-deu] [--format tfrecord]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pyarrow.parquet as pq  # noqa: E402

from nanogerman.dataset import assemble_dataset, write_part  # noqa: E402

TRAIN = [0, 1, 2, 3, 4]
VALIDATION = [5]


def corpus_size(paths: list[Path]) -> tuple[int, int]:
    """Documents and UTF-8 bytes of text in the shards."""
    documents = text_bytes = 0
    for path in paths:
        texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
        documents += len(texts)
        text_bytes += sum(len(text.encode("utf-8")) for text in texts)
    return documents, text_bytes


def bare_loop(paths: list[Path], out_dir: Path) -> None:
    import tensorflow as tf

    out_dir.mkdir(parents=True)
    for path in paths:
        with tf.io.TFRecordWriter(str(out_dir / f"{path.stem}.tfrecord")) as writer:
            for batch in pq.ParquetFile(path).iter_batches(columns=["text"]):
                for text in batch.column(0).to_pylist():
                    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")]))
                    writer.write(tf.train.Example(features=tf.train.Features(feature={"text": feature})).SerializeToString())


def _part(job: tuple[str, str, str]) -> None:
    shard, part, file_format = job
    write_part(shard, part, file_format=file_format, files_per_shard=1)


def stage_build(corpus: Path, out_dir: Path, workers: int, file_format: str) -> None:
    splits = {"train": TRAIN, "validation": VALIDATION}
    jobs = [
        (str(corpus / f"shard_{i:05d}.parquet"), str(out_dir / "parts" / f"shard_{i:05d}"), file_format)
        for indices in splits.values()
        for i in indices
    ]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_part, jobs))
    parts = {split: [out_dir / "parts" / f"shard_{i:05d}" for i in indices] for split, indices in splits.items()}
    assemble_dataset(parts, out_dir / "tfds", out_dir / "build.json", file_format=file_format)


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "eltec-deu")
    parser.add_argument("--format", default="tfrecord", choices=["tfrecord", "array_record"])
    args = parser.parse_args()
    paths = [args.corpus / f"shard_{i:05d}.parquet" for i in TRAIN + VALIDATION]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        sys.exit(f"benchmark: corpus shards not found: {', '.join(missing)}")
    documents, text_bytes = corpus_size(paths)
    import tensorflow_datasets  # noqa: F401  (imported once here, so no timing includes it)

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        bare = timed(bare_loop, paths, scratch / "bare")
        one = timed(stage_build, args.corpus, scratch / "one", 1, args.format)
        two = timed(stage_build, args.corpus, scratch / "two", 2, args.format)
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"corpus: {len(paths)} shards, {documents} documents, {text_bytes / 1e6:.1f} MB of text; format {args.format}")
    print(f"{'route':<34} {'seconds':>8} {'docs/s':>9} {'MB/s':>7} {'vs bare':>8}")
    for label, seconds in (("bare pyarrow + TFRecordWriter loop", bare), ("stage, 1 worker", one), ("stage, 2 workers", two)):
        print(f"{label:<34} {seconds:8.2f} {documents / seconds:9.0f} {text_bytes / 1e6 / seconds:7.1f} {seconds / bare:8.2f}")
    print(f"speedup from the second worker: {one / two:.2f}x")


if __name__ == "__main__":
    main()
