"""Corpus stage throughput on the real corpus, against a bare pyarrow read+write baseline.

    .venv/bin/python benchmarks/corpus.py [--corpus ../shared/corpus/eltec-deu] [--repeats 3]

Prints, for the local-source shard stage (copy + checks + manifest) and for a bare
``pq.read_table`` + ``pq.write_table`` of the same files in the same run, MB/s of
parquet and M characters/s, and their ratio; then the wall time of
``snakemake -n --configfile config/nano-german.yaml`` (241 shard jobs planned, no network).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from nanogerman.corpus import ShardSource, fetch_shard

REPO = Path(__file__).resolve().parents[1]


def best_of(repeats: int, action) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus" / "eltec-deu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shards = sorted(args.corpus.glob("shard_*.parquet"))
    if not shards:
        sys.exit(f"no shards in {args.corpus}")
    indices = [int(path.stem.removeprefix("shard_")) for path in shards]
    megabytes = sum(path.stat().st_size for path in shards) / 1e6
    characters = sum(fetch_shard_chars(path) for path in shards)

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        source = ShardSource("local", str(args.corpus))

        def stage():
            for index in indices:
                fetch_shard(source, index, out / f"s{index}.parquet", out / f"s{index}.json")

        def bare():
            for path in shards:
                pq.write_table(pq.read_table(path), out / f"b_{path.name}", compression="zstd")

        stage_seconds = best_of(args.repeats, stage)
        bare_seconds = best_of(args.repeats, bare)

    print(f"corpus: {len(shards)} shards, {megabytes:.1f} MB parquet, {characters / 1e6:.1f} M characters ({args.corpus})")
    for label, seconds in (("stage (copy+check+manifest)", stage_seconds), ("bare pyarrow read+write", bare_seconds)):
        print(f"{label:30s} {seconds:6.2f} s  {megabytes / seconds:7.1f} MB/s  {characters / seconds / 1e6:6.1f} M chars/s")
    print(f"ratio stage/bare time: {stage_seconds / bare_seconds:.2f} (below 1 means the stage is faster)")

    snakemake = Path(sys.executable).parent / "snakemake"
    started = time.perf_counter()
    result = subprocess.run(
        [str(snakemake), "-n", "--configfile", "config/nano-german.yaml"], cwd=REPO, capture_output=True, text=True
    )
    planning = time.perf_counter() - started
    jobs = next((line.split()[-1] for line in result.stdout.splitlines() if line.startswith("corpus_shard")), "?")
    print(
        f"snakemake -n --configfile config/nano-german.yaml: {planning:.2f} s wall, corpus_shard jobs planned: {jobs}, exit {result.returncode}"
    )


def fetch_shard_chars(path: Path) -> int:
    import pyarrow.compute as pc

    return pc.sum(pc.utf8_length(pq.read_table(path, columns=["text"]).column("text"))).as_py()


if __name__ == "__main__":
    main()
