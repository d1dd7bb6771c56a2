"""The embedded German sample corpus: text documents in the repo -> upstream-style parquet shards.

``resources/german_sample/docs/<register>_NN.txt`` holds one document per file,
written for this project. The last document of every register is held out as the
validation shard; the others are shuffled (fixed seed) and split into training
shards. The shards are laid out like the upstream ``nanochat-german-data`` files:
one ``text`` column, one document per row, zstd compression.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nanogerman.atomic import atomic_path
from nanogerman.selection import shard_name

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "resources" / "german_sample"
TRAIN_SHARDS = 4
SEED = 20261125


def read_documents(docs_dir: Path) -> dict[str, str]:
    """Every ``*.txt`` document by file stem, sorted by name, trailing whitespace removed."""
    return {path.stem: path.read_text(encoding="utf-8").strip() for path in sorted(docs_dir.glob("*.txt"))}


def split_documents(names: list[str]) -> tuple[list[str], list[str]]:
    """(train, validation): validation takes the highest-numbered document of each register."""
    last_of_register: dict[str, str] = {}
    for name in sorted(names):
        register = name.rsplit("_", 1)[0]
        last_of_register[register] = name
    validation = sorted(last_of_register.values())
    train = [name for name in sorted(names) if name not in set(validation)]
    random.Random(SEED).shuffle(train)
    return train, validation


def write_shard(texts: list[str], destination: Path) -> None:
    table = pa.table({"text": pa.array(texts, type=pa.string())})
    with atomic_path(destination) as temporary:
        pq.write_table(table, temporary, compression="zstd", compression_level=3, row_group_size=1024)


def build_sample(sample_dir: Path = SAMPLE_DIR, train_shards: int = TRAIN_SHARDS) -> dict[str, list[str]]:
    """Write ``shard_00000`` … (training) and one last shard (validation) into ``sample_dir``.

    Returns the document names in each shard, in row order.
    """
    documents = read_documents(sample_dir / "docs")
    train, validation = split_documents(list(documents))
    layout = {shard_name(i): train[i::train_shards] for i in range(train_shards)}
    layout[shard_name(train_shards)] = validation
    for shard, names in layout.items():
        write_shard([documents[name] for name in names], sample_dir / f"{shard}.parquet")
    return layout
