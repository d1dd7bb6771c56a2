"""Contamination stage throughput: the corpus n-gram pass against a bare read-and-split pass.

    PYTHONPATH=src .venv/bin/python benchmarks/contamination.py [--corpus ../shared/corpus/eltec-deu] [--n 13] [--repeats 3]

For the corpus's parquet shards, prints MB/s (UTF-8 text) of :func:`nanogerman.contamination.shard_ngrams`
(NFKC, lowercase, whitespace split, hashed n-grams, distinct, saved) and of a bare pass that reads the same
parquet and splits every text into lowercase tokens in Python (``text.lower().split()``), best of
``--repeats``, and their ratio (the target is at least 0.5).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from nanogerman.contamination import DEFAULT_N, shard_ngrams

REPO = Path(__file__).resolve().parents[1]


def best_of(repeats: int, action) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def bare_pass(files: list[Path]) -> int:
    tokens = 0
    for path in files:
        for text in pq.read_table(path, columns=["text"]).column("text").to_pylist():
            tokens += len((text or "").lower().split())
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus" / "eltec-deu")
    parser.add_argument("--n", type=int, default=DEFAULT_N)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
        ngram_seconds = best_of(args.repeats, lambda: shard_ngrams(files, out, n=args.n))
        info = shard_ngrams(files, out, n=args.n)
    bare_seconds = best_of(args.repeats, lambda: bare_pass(files))
    mb = size / 1e6
    print(
        f"corpus: {len(files)} files, {info['documents']} documents, {mb:.1f} MB of text, {info['ngrams']} distinct {args.n}-grams"
    )
    print(f"n-gram pass: {ngram_seconds:.2f} s, {mb / ngram_seconds:.1f} MB/s")
    print(f"bare read + lowercase split: {bare_seconds:.2f} s, {mb / bare_seconds:.1f} MB/s")
    print(f"ratio (n-gram pass / bare pass, MB/s): {bare_seconds / ngram_seconds:.2f}")


if __name__ == "__main__":
    main()
