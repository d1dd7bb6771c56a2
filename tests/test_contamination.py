"""Contamination: hashed word n-grams of the training shards against each task's documents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nanogerman.contamination import (
    ContaminationError,
    contamination_rows,
    merge_ngrams,
    normalized_tokens,
    shard_ngrams,
    task_contamination,
    task_documents,
    text_ngrams,
    write_contamination_summary,
)
from nanogerman.offline_tasks import NextPassageSpec, write_next_passage_task
from nanogerman.schema import schema_defaults
from nanogerman.tokenizer_training import iter_texts

REPO = Path(__file__).resolve().parents[1]
TRAIN_SHARDS = [f"shard_{index:05d}.parquet" for index in range(4)]  # the sample's training shards; shard_00004 is held out
N = schema_defaults("evaluation", "contamination")["n"]  # the n-gram length the workflow uses unless configured


def test_ngrams_are_per_document_after_nfkc_and_lowercasing():
    texts = ["Der ＡＰＦＥＬ fällt nicht weit vom Stamm", None, "zu kurz", "der apfel fällt nicht weit"]
    grams, owners = text_ngrams(texts, 3)
    assert owners.tolist() == [0] * 5 + [3] * 3  # no n-gram spans two documents; short and missing texts have none
    assert grams[:3].tolist() == grams[5:8].tolist()  # NFKC folds the full-width letters, and case is ignored
    assert normalized_tokens(texts[0])[:2] == ["der", "apfel"]
    assert len(text_ngrams(texts, 5)[0]) == 3 + 1  # n is configurable
    with pytest.raises(ContaminationError, match="evaluation.contamination.n is 0"):
        text_ngrams(texts, 0)


def _corpus(tmp_path: Path, sample_dir: Path, planted: str | None = None) -> Path:
    """The sample's training shards as the contamination jobs see them, one of them with ``planted`` inside a document."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    shard_files = []
    for name in TRAIN_SHARDS:
        table = pq.read_table(sample_dir / name)
        if planted is not None and name == TRAIN_SHARDS[1]:
            texts = table.column("text").to_pylist()
            texts[2] = texts[2] + "\n\nAus einem Quiz: " + planted + " Ende des Zitats."
            table = pa.table({"text": texts})
        path = tmp_path / name
        pq.write_table(table, path)
        out = tmp_path / f"{path.stem}.npy"
        shard_ngrams([path], out, n=N)
        shard_files.append(out)
    merged = tmp_path / "corpus_ngrams.npy"
    info = merge_ngrams(shard_files, merged, n=N)
    assert info["ngrams"] == len(np.load(merged)) > 1000
    return merged


def test_a_fixture_item_planted_in_a_training_shard_is_reported_contaminated(tmp_path, sample_dir):
    task = "lambada_openai_mt_de"
    folder = REPO / "tests" / "data" / "tasks" / task
    documents = task_documents(task, local_data={task: str(folder)})
    items = [json.loads(line)["text"] for line in (folder / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(documents) == len(items) == 4 and documents[1]["text"].startswith(items[1])  # the question (the text) and answer
    clean = task_contamination(task, documents, _corpus(tmp_path / "clean", sample_dir), tmp_path / "clean.json", n=N)
    assert (clean["contaminated"], clean["share"]) == (0, 0.0)
    result = task_contamination(task, documents, _corpus(tmp_path / "planted", sample_dir, items[1]), tmp_path / "task.json", n=N)
    assert result["contaminated_ids"] == [documents[1]["id"]] and result["share"] == pytest.approx(1 / 4)
    assert json.loads((tmp_path / "task.json").read_text())["contaminated"] == 1
    write_contamination_summary(contamination_rows([tmp_path / "task.json"]), tmp_path / "s.md", tmp_path / "s.csv", n=N)
    assert f"| {task} | 4 | 1 | 25.0 % |" in (tmp_path / "s.md").read_text()
    assert (tmp_path / "s.csv").read_text().splitlines()[1] == f"{task},{N},4,1,0.25"
    assert f"at least one {N}-gram" in (tmp_path / "s.md").read_text()


def test_the_generated_task_from_held_out_shards_is_not_contaminated(tmp_path, sample_dir):
    held_out = list(iter_texts([sample_dir / "shard_00004.parquet"]))
    folder = tmp_path / "next_passage"
    write_next_passage_task(held_out, NextPassageSpec(examples=40, seed=11, context_chars=150, continuation_chars=60), folder)
    documents = task_documents(NextPassageSpec.task, generated=[folder])
    assert len(documents) == 40
    result = task_contamination(
        NextPassageSpec.task, documents, _corpus(tmp_path / "corpus", sample_dir), tmp_path / "np.json", n=N
    )
    assert result["contaminated"] == 0 and result["documents"] == 40
    # The check can fail: the same documents against the held-out shard itself are all contaminated.
    own = tmp_path / "own.npy"
    shard_ngrams([sample_dir / "shard_00004.parquet"], own, n=N)
    assert task_contamination(NextPassageSpec.task, documents, own, tmp_path / "own.json", n=N)["share"] > 0.9


def test_ngram_hashes_match_a_token_by_token_reference():
    """Distinct tokens are hashed once and looked up: the same hashes as hashing every token on its own."""
    from nanogerman.contamination import _MULTIPLIER, _token_hashes

    texts = ["die Katze und die Maus und die Katze", "", " \tMaus und Katze und die Maus\n", "   "]  # no empty tokens
    grams, owners = text_ngrams(texts, 3)
    expected, expected_owners = [], []
    for number, text in enumerate(texts):
        hashes = [int(_token_hashes([token])[0]) for token in normalized_tokens(text)]
        for start in range(len(hashes) - 2):
            value = 0
            for part in hashes[start : start + 3]:
                value = (value * int(_MULTIPLIER) + part) % 2**64
            expected.append(value)
            expected_owners.append(number)
    assert grams.tolist() == expected and owners.tolist() == expected_owners


def test_token_hashes_follow_their_definition():
    """8 UTF-8 bytes at a time, xor-ed into the length and multiplied, then splitmix64: checked with Python integers."""
    from nanogerman.contamination import _WORD_MULTIPLIER, _token_hashes

    def reference(token: str) -> int:
        data, mask = token.encode("utf-8"), 2**64 - 1
        value = len(data)
        for start in range(0, max(len(data), 1), 8):
            value = ((value ^ int.from_bytes(data[start : start + 8], "little")) * int(_WORD_MULTIPLIER)) & mask
        value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & mask
        value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & mask
        return value ^ (value >> 31)

    tokens = ["", "a", "apfel", "äpfelchen", "12345678", "123456789", "donaudampfschifffahrtsgesellschaft", "ǆ€🙂" * 7]
    assert _token_hashes(tokens).tolist() == [reference(token) for token in tokens]
    assert len(set(_token_hashes(tokens).tolist())) == len(tokens)
