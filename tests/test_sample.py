"""The embedded German sample: written for the project, laid out like the upstream shards."""

from __future__ import annotations

import pyarrow.parquet as pq

from nanogerman.config import shard_name
from nanogerman.sample import TRAIN_SHARDS, build_sample, read_documents, split_documents


def test_committed_shards_match_the_text_documents(sample_dir):
    documents = read_documents(sample_dir / "docs")
    train, validation = split_documents(list(documents))
    layout = {shard_name(i): train[i::TRAIN_SHARDS] for i in range(TRAIN_SHARDS)}
    layout[shard_name(TRAIN_SHARDS)] = validation
    for shard, names in layout.items():
        table = pq.read_table(sample_dir / f"{shard}.parquet")
        assert table.column_names == ["text"]
        assert table.column("text").to_pylist() == [documents[name] for name in names], (
            f"{shard} is stale: run scripts/build_german_sample.py"
        )
        assert pq.ParquetFile(sample_dir / f"{shard}.parquet").metadata.row_group(0).column(0).compression == "ZSTD"


def test_sample_size_registers_and_spelling(sample_dir):
    documents = read_documents(sample_dir / "docs")
    text = "\n".join(documents.values())
    assert len(text.encode("utf-8")) >= 150_000
    registers = {name.rsplit("_", 1)[0] for name in documents}
    assert {"news", "lexikon", "dialog", "anleitung", "brief", "rezension"} <= registers
    for character in "äöüÄÖÜß€„“–":
        assert character in text
    assert " daß " not in text  # modern spelling


def test_validation_holds_one_document_per_register_and_is_disjoint():
    names = [f"{register}_{number:02d}" for register in ("news", "brief") for number in range(1, 10)]
    train, validation = split_documents(names)
    assert validation == ["brief_09", "news_09"]
    assert set(train).isdisjoint(validation) and len(train) + len(validation) == len(names)
    assert train == split_documents(names)[0]  # seeded: the same order every time


def test_rebuild_is_deterministic(tmp_path, sample_dir):
    import shutil

    shutil.copytree(sample_dir / "docs", tmp_path / "docs")
    first = build_sample(tmp_path)
    first_bytes = {path.name: path.read_bytes() for path in tmp_path.glob("*.parquet")}
    assert build_sample(tmp_path) == first
    assert {path.name: path.read_bytes() for path in tmp_path.glob("*.parquet")} == first_bytes
