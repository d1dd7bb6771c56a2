"""What the workflow accepts as a text column, and how many of its texts are blank.

A text column is Arrow ``string`` or ``large_string`` (``large_utf8``), or a
dictionary-encoded column of either (what pandas categoricals and some writers
produce); readers decode a dictionary column to plain strings.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


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
