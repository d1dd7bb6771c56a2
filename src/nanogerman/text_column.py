"""The parquet ``text`` column: what the workflow accepts as one, the one reader of it, and how many texts are blank.

A text column is Arrow ``string`` or ``large_string`` (``large_utf8``), or a
dictionary-encoded column of either (what pandas categoricals and some writers
produce); :func:`parquet_text_batches` decodes a dictionary column to plain strings.
Every stage that reads texts from parquet (corpus, tokenizers, dataset, tokenizer
evaluation, contamination, the evaluation's held-out text) reads them through it, so a
bad file fails with one wording, naming the file and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nanogerman.errors import StageError, first_line

TEXT_COLUMN = "text"


class TextColumnError(StageError):
    """A parquet file's text column cannot be read."""


def is_text_type(kind: pa.DataType) -> bool:
    """string, large_string, string_view, or a dictionary of them."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_string_view(kind)


def _is_string_view(kind: pa.DataType) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(kind))


def plain_texts(texts: pa.Array) -> pa.Array:
    """A text array as plain strings (a dictionary-encoded one decoded)."""
    if pa.types.is_dictionary(texts.type):
        return texts.dictionary_decode()
    return texts


def blank_count(texts: pa.Array) -> int:
    """How many texts are empty or whitespace only."""
    if len(texts) == 0:
        return 0
    trimmed = pc.utf8_length(pc.utf8_trim_whitespace(plain_texts(texts)))
    return pc.sum(pc.equal(trimmed, 0)).as_py() or 0


def parquet_text_batches(
    path: str | Path,
    *,
    column: str = TEXT_COLUMN,
    batch_size: int = 1024,
    label: str | None = None,
    hint: str = "",
    error: type[StageError] = TextColumnError,
) -> Iterator[pa.Array]:
    """The text ``column`` of a parquet file, one record batch at a time, as plain string arrays (nulls kept).

    One record batch is in memory at a time. A file that is not readable parquet, lacks the
    column or holds no text in it raises ``error`` with one line naming ``label`` (default:
    the path); ``hint`` (e.g. "; set text_field to …") is appended to a missing column's line.
    What a null means is the caller's to decide.
    """
    label = label or str(path)
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as caught:
        raise error(f"{label}: not a readable parquet file ({first_line(caught)})") from None
    schema = parquet.schema_arrow
    if column not in schema.names:
        raise error(f"{label}: no {column!r} column (columns: {', '.join(schema.names) or 'none'}){hint}")
    kind = schema.field(column).type
    if not is_text_type(kind):
        raise error(f"{label}: column {column!r} has type {kind}; expected string (large or dictionary-encoded too)")
    try:
        for batch in parquet.iter_batches(columns=[column], batch_size=batch_size):
            yield plain_texts(batch.column(0))
    except (pa.ArrowException, OSError) as caught:
        raise error(f"{label}: not a readable parquet file ({first_line(caught)})") from None
