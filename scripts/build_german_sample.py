"""Rebuild resources/german_sample/shard_*.parquet from the text documents in resources/german_sample/docs.

Run after editing a document: .venv/bin/python scripts/build_german_sample.py
"""

from nanogerman.sample import SAMPLE_DIR, build_sample

if __name__ == "__main__":
    for shard, names in build_sample().items():
        print(f"{SAMPLE_DIR / shard}.parquet: {len(names)} documents")
