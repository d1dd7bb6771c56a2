"""Contamination stage throughput: the corpus n-gram pass against a bare read-and-split pass.

    PYTHONPATH=src .venv/bin/python benchmarks/contamination.py [--corpus ../shared/corpus/eltec-deu] [--n 13] [--repeats 3]

For the corpus's parquet shards, prints MB/s (UTF-8 text) of :func:`nanogerman.contamination.shard_ngrams`
(NFKC, lowercase, whitespace split, hashed n-grams, distinct, saved) and of a bare pass that reads the same
parquet and splits every text into lowercase tokens in Python (``text.lower().split()``), best of
``--repeats``, and their ratio (the target is at least 0.5). Both passes run in one thread (pyarrow's CPU
and I/O thread pools are set to one thread; numpy sorts in one), taking turns, so that load from other
processes falls on both alike. The last line gives the same ratio in process CPU time (on a busy machine
the wall-clock times also count the time other processes held the CPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nanogerman.contamination import shard_ngrams
from nanogerman.schema import schema_defaults

REPO = Path(__file__).resolve().parents[1]


def best_of_interleaved(repeats: int, *actions) -> list[tuple[float, float]]:
    """The best (wall-clock, process CPU) seconds of each action over ``repeats`` rounds; each round runs every action
    once, in turn."""
    times = [[] for _ in actions]
    for _ in range(repeats):
        for action, taken in zip(actions, times, strict=True):
            wall, cpu = time.perf_counter(), time.process_time()
            action()
            taken.append((time.perf_counter() - wall, time.process_time() - cpu))
    return [(min(wall for wall, _ in taken), min(cpu for _, cpu in taken)) for taken in times]


def bare_pass(files: list[Path]) -> int:
    tokens = 0
    for path in files:
        for text in pq.read_table(path, columns=["text"]).column("text").to_pylist():
            tokens += len((text or "").lower().split())
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus" / "eltec-deu")
    parser.add_argument("--n", type=int, default=schema_defaults("evaluation", "contamination")["n"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    files = sorted(args.corpus.glob("*.parquet"))
    if not files:
        raise SystemExit(f"{args.corpus}: no parquet files")
    size = sum(
        len((text or "").encode("utf-8"))
        for path in files
        for text in pq.read_table(path, columns=["text"]).column("text").to_pylist()
    )
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "ngrams.npy"
        info = shard_ngrams(files, out, n=args.n)
        (ngram_seconds, ngram_cpu), (bare_seconds, bare_cpu) = best_of_interleaved(
            args.repeats, lambda: shard_ngrams(files, out, n=args.n), lambda: bare_pass(files)
        )
    mb = size / 1e6
    print(
        f"corpus: {len(files)} files, {info['documents']} documents, {mb:.1f} MB of text, {info['ngrams']} distinct {args.n}-grams"
    )
    print(f"one thread, best of {args.repeats} (the passes take turns)")
    print(f"n-gram pass: {ngram_seconds:.2f} s, {mb / ngram_seconds:.1f} MB/s")
    print(f"bare read + lowercase split: {bare_seconds:.2f} s, {mb / bare_seconds:.1f} MB/s")
    print(f"ratio (n-gram pass / bare pass, MB/s): {bare_seconds / ngram_seconds:.2f}")
    print(
        f"CPU time of this process, less sensitive to other load: n-gram pass {ngram_cpu:.2f} s, bare pass "
        f"{bare_cpu:.2f} s, ratio {bare_cpu / ngram_cpu:.2f}"
    )


if __name__ == "__main__":
    main()
