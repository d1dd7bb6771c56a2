"""Contamination of evaluation tasks by the training corpus: shared word n-grams.

A text's n-grams are runs of ``n`` whitespace tokens (13 by default) after NFKC
normalization and lowercasing, each hashed to 64 bits. Three steps, one job each:

- :func:`shard_ngrams`: the distinct n-gram hashes of one training shard (``.npy``, sorted).
  Vectorized with pyarrow and numpy: the shard's texts are normalized, lowercased and split at
  whitespace a batch at a time (:mod:`nanogerman.text_tokens`); all tokens are hashed at once
  over pyarrow's buffers (8 UTF-8 bytes at a time, then a splitmix64 finalizer); the n-gram
  hashes are a polynomial over the token hashes, computed for all positions at once, and
  n-grams that would cross from one document into the next are dropped; the shard's n-grams are
  sorted once at the end.
- :func:`merge_ngrams`: the union over all shards.
- :func:`task_contamination`: for every evaluation document of a task (its question, i.e.
  the prompt or lm-eval's decontamination query, together with the correct answer), whether
  it shares at least one n-gram with the corpus; the share of such documents is reported.

A document with fewer than ``n`` tokens has no n-gram and counts as clean. 64-bit hashes make
a false match between two different n-grams about as likely as 1 in 10^19 per pair compared.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from nanogerman.atomic import atomic_path, write_json
from nanogerman.errors import StageError
from nanogerman.text_column import TEXT_COLUMN, parquet_text_batches
from nanogerman.text_tokens import batch_tokens, utf8_buffers

log = logging.getLogger(__name__)

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the n-gram polynomial's base (mod 2^64)
_WORD_MULTIPLIER = np.uint64(0xD6E8FEB86659FD93)  # odd: mixes each 8-byte word of a token into its hash
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)  # masks keeping a word's low k bytes
# Changes whenever the hash values do; the contamination rules pass it as a parameter, so that n-grams hashed by an
# older version are computed again instead of being compared with new ones.
HASH_VERSION = 2
_BLOCK = 1 << 14  # tokens or n-gram positions hashed at a time (128 KiB of hashes)


class ContaminationError(StageError):
    """N-grams cannot be computed or compared as configured."""


def normalized_tokens(text: str) -> list[str]:
    """The tokens the n-grams are made of: NFKC, lowercase, split at whitespace (for one text; the reference)."""
    return unicodedata.normalize("NFKC", text).lower().split()


def _token_hashes(tokens: Sequence[str]) -> np.ndarray:
    """64-bit hashes of tokens (the reference for :func:`_string_hashes`, one token at a time)."""
    import pyarrow as pa

    return _string_hashes(pa.array(list(tokens), pa.string()))


def _string_hashes(strings) -> np.ndarray:
    """64-bit hashes of the strings of a pyarrow string array, all at once. Starting from a string's length in bytes,
    each 8 bytes of its UTF-8 (a little-endian word, zero-padded at the end) are xor-ed into the value, which is then
    multiplied by an odd constant (mod 2^64); a splitmix64 finalizer makes similar strings land far apart. Every step
    is invertible, so strings of up to 8 bytes never collide."""
    if len(strings) == 0:
        return np.empty(0, dtype=np.uint64)
    offsets, data = utf8_buffers(strings)
    padded = np.zeros(offsets[-1] - offsets[0] + 8, dtype=np.uint8)
    padded[: len(padded) - 8] = data[offsets[0] : offsets[-1]]
    words = np.ndarray(len(padded) - 7, dtype="<u8", buffer=padded, strides=(1,))  # words[i]: the 8 bytes from byte i
    hashes = np.empty(len(strings), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for begin in range(0, len(strings), _BLOCK):  # a cache-sized block at a time, as in _ngram_hashes
            bounds = offsets[begin : begin + _BLOCK + 1]
            starts, lengths = bounds[:-1] - offsets[0], np.diff(bounds)
            value = hashes[begin : begin + len(starts)]
            np.bitwise_and(words[starts], _LOW_BYTES[np.minimum(lengths, 8)], out=value)
            value ^= lengths.astype(np.uint64)
            value *= _WORD_MULTIPLIER
            rows, done = np.flatnonzero(lengths > 8), 8
            while len(rows):  # the strings longer than ``done`` bytes: their next word
                word = words[starts[rows] + done] & _LOW_BYTES[np.minimum(lengths[rows] - done, 8)]
                value[rows] = (value[rows] ^ word) * _WORD_MULTIPLIER
                done += 8
                rows = rows[lengths[rows] > done]
            value ^= value >> np.uint64(30)
            value *= np.uint64(0xBF58476D1CE4E5B9)
            value ^= value >> np.uint64(27)
            value *= np.uint64(0x94D049BB133111EB)
            value ^= value >> np.uint64(31)
    return hashes


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort and drop repeats: several times faster than numpy 2.5's ``np.unique`` here).
    Sorts ``values`` in place."""
    values.sort()
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _ngram_hashes(token_hashes: np.ndarray, starts: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """Hashes of every n-gram within [start, end) spans of ``token_hashes`` (spans are documents)."""
    count = len(token_hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    combined = np.empty(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        # In place and a cache-sized block at a time: about 2.5 times faster here than whole-array arithmetic.
        for begin in range(0, count, _BLOCK):
            end = min(begin + _BLOCK, count)
            block = combined[begin:end]
            block[:] = token_hashes[begin:end]
            for offset in range(1, n):
                block *= _MULTIPLIER
                block += token_hashes[begin + offset : end + offset]
    # An n-gram starting at position p is inside its document when p + n <= that document's end: the n - 1 positions
    # before each document's end start n-grams that cross it (positions before a short document's start already
    # cross the previous document's end, so marking them changes nothing).
    inside = np.ones(count, dtype=bool)
    crossing = (np.asarray(ends, dtype=np.int64)[:, None] - np.arange(1, n)[None, :]).ravel()
    inside[crossing[(crossing >= 0) & (crossing < count)]] = False
    return combined[inside]


def text_ngrams(texts: Iterable[str | None], n: int, *, owners: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All n-gram hashes of ``texts`` and, for each, the index of its text: (hashes, text index; empty without ``owners``)."""
    import pyarrow as pa

    return _array_ngrams(pa.array(list(texts), pa.string()), n, owners=owners)


def _array_ngrams(texts, n: int, *, owners: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`text_ngrams` of a pyarrow string array."""
    if n < 1:
        raise ContaminationError(f"config error: evaluation.contamination.n is {n}; expected an integer >= 1")
    flat, offsets = batch_tokens(texts)
    if len(flat) == 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    # Every token is hashed where it lies (about twice as fast here as hashing pyarrow's dictionary of distinct tokens).
    hashes = _string_hashes(flat)
    starts, ends = offsets[:-1], offsets[1:]
    grams = _ngram_hashes(hashes, starts, ends, n)
    if not owners:
        return grams, np.empty(0, dtype=np.int64)
    return grams, np.repeat(np.arange(len(starts)), np.maximum(ends - starts - n + 1, 0))


def shard_ngrams(parquet_files: Sequence[str | Path], out: str | Path, *, n: int, batch_rows: int = 2048) -> dict:
    """Write the distinct n-gram hashes of the shards' ``text`` column to ``out`` (a sorted ``.npy``); return counts."""
    import pyarrow.compute as pc

    parts = []
    documents = size = 0
    for path in parquet_files:
        for batch in parquet_text_batches(path, column=TEXT_COLUMN, batch_size=batch_rows, error=ContaminationError):
            documents += len(batch)
            size += pc.sum(pc.binary_length(batch)).as_py() or 0
            parts.append(_array_ngrams(batch, n, owners=False)[0])
    distinct = _distinct(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)
    _save(out, distinct)
    info = {
        "files": [str(path) for path in parquet_files],
        "n": n,
        "documents": documents,
        "bytes": size,
        "ngrams": len(distinct),
    }
    log.info("%d documents, %d bytes: %d distinct %d-grams", documents, size, len(distinct), n)
    return info


def _save(out: str | Path, values: np.ndarray) -> None:
    with atomic_path(out) as temporary, open(temporary, "wb") as handle:
        np.save(handle, values)


def load_ngrams(path: str | Path) -> np.ndarray:
    try:
        return np.load(path)
    except (OSError, ValueError) as error:
        raise ContaminationError(f"{path}: unreadable n-gram file ({error}); rerun its contamination rule") from None


def merge_ngrams(shard_files: Sequence[str | Path], out: str | Path, *, n: int) -> dict:
    """The union of the shards' n-gram hashes, written to ``out`` (sorted, distinct) with a JSON summary beside it."""
    parts = [load_ngrams(path) for path in shard_files]
    merged = _distinct(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)
    _save(out, merged)
    info = {"n": n, "shards": [str(path) for path in shard_files], "ngrams": len(merged)}
    write_json(Path(out).with_suffix(".json"), info)
    return info


def contaminated(texts: Sequence[str], corpus: np.ndarray, n: int) -> list[bool]:
    """For each text, whether it shares at least one n-gram with the corpus hashes (sorted)."""
    grams, owners = text_ngrams(texts, n)
    positions = np.minimum(np.searchsorted(corpus, grams), max(len(corpus) - 1, 0))
    hit = corpus[positions] == grams if len(corpus) else np.zeros(len(grams), dtype=bool)
    flags = np.zeros(len(texts), dtype=bool)
    flags[owners[hit]] = True
    return flags.tolist()


def task_contamination(task: str, documents: Sequence[dict], corpus_file: str | Path, out: str | Path, *, n: int) -> dict:
    """Write ``{task, n, documents, contaminated, share, contaminated_ids}`` for ``documents`` ({id, text}) to ``out``."""
    corpus = load_ngrams(corpus_file)
    flags = contaminated([document["text"] for document in documents], corpus, n)
    hits = [document["id"] for document, flag in zip(documents, flags, strict=False) if flag]
    result = {
        "task": task,
        "n": n,
        "documents": len(documents),
        "contaminated": len(hits),
        "share": len(hits) / len(documents) if documents else None,
        "contaminated_ids": hits,
        "corpus_ngrams": len(corpus),
    }
    write_json(out, result)
    log.info("%s: %d of %d documents share a %d-gram with the training corpus", task, len(hits), len(documents), n)
    return result


def eval_documents(task) -> list[dict]:
    """An lm-eval task object's evaluation documents as {id, text}: the question (the task's decontamination query
    where it defines one, else its prompt) and the correct answer, separated by the task's target delimiter."""
    docs = task.test_docs() if task.has_test_docs() else task.validation_docs()
    found = []
    for number, doc in enumerate(docs):
        question = _decontamination_query(task, doc) if task.should_decontaminate() else task.doc_to_text(doc)
        target = task.doc_to_target(doc)
        if task.OUTPUT_TYPE == "multiple_choice":
            choices = task.doc_to_choice(doc)
            answer = choices[target] if isinstance(target, int) else str(target)
        else:
            answer = str(target)
        found.append({"id": number, "text": f"{question}{task.config.target_delimiter}{answer}"})
    return found


def _decontamination_query(task, doc: dict) -> str:
    """lm-eval's decontamination query of ``doc``. lm-eval 0.4.13 runs ``ast.literal_eval`` over a rendered Jinja
    query (e.g. lambada's ``{{text}}``), which fails on plain text: such a query is rendered as text here."""
    from lm_eval.utils import apply_template

    try:
        return task.doc_to_decontamination_query(doc)
    except (SyntaxError, ValueError):
        return apply_template(task.config.doc_to_decontamination_query, doc)


def task_documents(task: str, *, generated: Sequence[str | Path] = (), local_data: dict | None = None) -> list[dict]:
    """The evaluation documents of an lm-eval task or group (its subtasks' in turn, ids ``<subtask>:<n>``) as {id, text},
    defined as the evaluation stage defines them (generated tasks, local data, corrected tasks)."""
    import tempfile

    from lm_eval.tasks import TaskManager

    from nanogerman.evaluation import build_include_dir
    from nanogerman.suites import leaf_tasks

    with tempfile.TemporaryDirectory(prefix="nanogerman-contamination-") as include_dir:
        names = build_include_dir(include_dir, generated=generated, local_data=local_data, tasks=[task])
        manager = TaskManager(include_path=include_dir, include_defaults=task not in names)
        if task not in manager.all_tasks:
            raise ContaminationError(f"config error: task {task!r} is not an lm-eval task or group")
        leaves = leaf_tasks([task], manager)
        documents = []
        for leaf in leaves:
            prefix = "" if len(leaves) == 1 else f"{leaf.config.task}:"
            documents.extend({"id": f"{prefix}{document['id']}", "text": document["text"]} for document in eval_documents(leaf))
    return documents


def contamination_rows(paths: Sequence[str | Path]) -> list[dict]:
    """One row per task result file: task, n, documents, contaminated, share."""
    rows = []
    for path in paths:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        rows.append({key: data[key] for key in ("task", "n", "documents", "contaminated", "share")})
    return rows


def write_contamination_summary(rows: Sequence[dict], markdown_out: str | Path, csv_out: str | Path, *, n: int) -> None:
    """A Markdown table and a CSV of :func:`contamination_rows` (share in percent in the Markdown), for ``n``-grams."""
    lines = ["| task | documents | contaminated | share |", "|---|---:|---:|---:|"]
    for row in rows:
        share = "–" if row["share"] is None else f"{100 * row['share']:.1f} %"
        lines.append(f"| {row['task']} | {row['documents']} | {row['contaminated']} | {share} |")
    text = (
        f"Share of each task's evaluation documents (question and correct answer) that share at least one {n}-gram "
        "(whitespace tokens after NFKC and lowercasing) with the training corpus.\n\n" + "\n".join(lines) + "\n"
    )
    with atomic_path(markdown_out) as temporary:
        temporary.write_text(text, encoding="utf-8")
    with atomic_path(csv_out) as temporary:
        header = "task,n,documents,contaminated,share\n"
        temporary.write_text(
            header
            + "".join(
                f"{r['task']},{r['n']},{r['documents']},{r['contaminated']},{'' if r['share'] is None else repr(r['share'])}\n"
                for r in rows
            ),
            encoding="utf-8",
        )


def contamination_section(paths: Sequence[str | Path], evaluated: Iterable[str] = ()) -> str:
    """The report's contamination table in Markdown: a column per task, its share of contaminated documents; a
    ``<task>_clean`` column beside each task that was also evaluated on its clean subset (named in ``evaluated``)."""
    from nanogerman.clean_subsets import clean_rows

    rows = clean_rows(contamination_rows(paths), evaluated)
    if not rows:
        return ""
    n = rows[0]["n"]
    header = "| | " + " | ".join(row["task"] for row in rows) + " |"
    rule = "|---|" + "---:|" * len(rows)
    shares = (
        "| contaminated | "
        + " | ".join(
            "–" if row["share"] is None else f"{100 * row['share']:.1f} % ({row['contaminated']}/{row['documents']})"
            for row in rows
        )
        + " |"
    )
    return (
        "\n## Contamination\n\nShare of each task's evaluation documents (question and correct answer) that share at least "
        f"one {n}-gram (whitespace tokens after NFKC and lowercasing) with the training corpus.\n\n"
        + "\n".join([header, rule, shares])
        + "\n"
    )
