"""Whitespace tokens of texts after NFKC and lowercasing, for a whole pyarrow batch at once.

The definition is Python's: ``unicodedata.normalize("NFKC", text).lower()``, split at Unicode
whitespace. Most texts of a Latin-script corpus consist only of *plain* characters
(:data:`PLAIN_RANGES`): each is its own NFKC form (no decomposition, combining class 0, never the
second character of a composition), so a text of them is already NFKC, and pyarrow's ``utf8_lower``
lowercases them as ``str.lower`` does (no context-dependent final sigma, no one-to-many mapping).
Such texts are lowercased by pyarrow; the few others by Python. The tests check these properties
of every plain character against the running Python and pyarrow.

Plain texts hold no whitespace beyond ASCII's six characters, which pyarrow's faster
``ascii_split_whitespace`` splits at; a batch whose normalized texts hold other whitespace
(U+001C–U+001F, U+0085, no-break and wide spaces, …) is split by ``utf8_split_whitespace``
(whose whitespace is ``str.split``'s).
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Code point ranges (inclusive) of the plain characters: most of Latin-1 and Latin Extended-A/B, general punctuation
# and currency signs, leaving out compatibility characters (ª ² ½ ſ …), İ, and whitespace other than ASCII's.
PLAIN_RANGES = (
    (0x0000, 0x001B),
    (0x0020, 0x0084),
    (0x0086, 0x009F),
    (0x00A1, 0x00A7),
    (0x00A9, 0x00A9),
    (0x00AB, 0x00AE),
    (0x00B0, 0x00B1),
    (0x00B6, 0x00B7),
    (0x00BB, 0x00BB),
    (0x00BF, 0x012F),
    (0x0131, 0x0131),
    (0x0134, 0x013E),
    (0x0141, 0x0148),
    (0x014A, 0x017E),
    (0x0180, 0x01C3),
    (0x01CD, 0x01F0),
    (0x01F4, 0x024F),
    (0x2010, 0x2010),
    (0x2012, 0x2016),
    (0x2018, 0x2023),
    (0x2027, 0x2027),
    (0x202A, 0x202E),
    (0x2030, 0x2032),
    (0x2035, 0x2035),
    (0x2038, 0x203B),
    (0x203D, 0x203D),
    (0x203F, 0x2046),
    (0x204A, 0x2056),
    (0x2058, 0x205E),
    (0x2060, 0x206F),
    (0x20A0, 0x20A7),
    (0x20A9, 0x20C0),
)
# Whitespace for str.split() and utf8_split_whitespace but not for ascii_split_whitespace.
NON_ASCII_SPACE = re.compile("[\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")

_PLAIN = np.zeros(0x10000, dtype=bool)  # by code point, for the 1-3 byte UTF-8 characters
for _first, _last in PLAIN_RANGES:
    _PLAIN[_first : _last + 1] = True


def utf8_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (int64, into the data) and the UTF-8 bytes of a string array's texts."""
    _, offset_buffer, data_buffer = texts.buffers()
    width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    offsets = np.frombuffer(offset_buffer, dtype=width)[texts.offset : texts.offset + len(texts) + 1].astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, dtype=np.uint8)
    return offsets, data


def not_plain(texts: pa.Array) -> np.ndarray:
    """For each text of a string array, whether it holds a character that is not plain (a boolean mask)."""
    if len(texts) == 0:
        return np.zeros(0, dtype=bool)
    offsets, data = utf8_buffers(texts)
    data = data[offsets[0] : offsets[-1]]
    positions = [np.flatnonzero((data - np.uint8(0x1C)) < 4)]  # U+001C-U+001F: ASCII's only non-plain characters
    leads = np.flatnonzero(data >= 0xC0)  # the first bytes of multi-byte characters
    if len(leads):
        last = len(data) - 1  # a 2-byte character at the very end has no third byte: any byte will do, it is not read
        first, second, third = (data[np.minimum(leads + step, last)].astype(np.int32) for step in range(3))
        two_bytes = first < 0xE0
        code = np.where(
            two_bytes,
            ((first & 0x1F) << 6) | (second & 0x3F),
            ((first & 0x0F) << 12) | ((second & 0x3F) << 6) | (third & 0x3F),
        )
        plain = _PLAIN[code & 0xFFFF] & (first < 0xF0)  # 4-byte characters (beyond U+FFFF) are not plain
        positions.append(leads[~plain])
    found = np.concatenate(positions) + offsets[0]
    mask = np.zeros(len(texts), dtype=bool)
    mask[np.searchsorted(offsets, found, side="right") - 1] = True
    return mask


def normalized_lowercase(texts: pa.Array) -> tuple[pa.Array, bool]:
    """NFKC, then lowercase, of every text (nulls become empty texts), and whether ASCII whitespace is all they hold."""
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        texts = texts.cast(pa.large_string())  # e.g. string_view
    if texts.null_count:
        texts = texts.fill_null("")
    lowered = pc.utf8_lower(texts)
    other = not_plain(texts)
    if not other.any():
        return lowered, True
    fixed = [unicodedata.normalize("NFKC", text).lower() for text in texts.filter(pa.array(other)).to_pylist()]
    replaced = pc.replace_with_mask(lowered, pa.array(other), pa.array(fixed, lowered.type))
    return replaced, not any(NON_ASCII_SPACE.search(text) for text in fixed)


def batch_tokens(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The whitespace tokens of every text after NFKC and lowercasing, all texts' in one string array, and the
    offsets of each text's tokens in it (text ``i`` has ``tokens[offsets[i]:offsets[i + 1]]``; null texts have none)."""
    lowered, ascii_spaces = normalized_lowercase(texts)
    lists = pc.ascii_split_whitespace(lowered) if ascii_spaces else pc.utf8_split_whitespace(lowered)
    offsets = lists.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]
    tokens = pc.list_flatten(lists)
    # Unlike str.split, pyarrow's splits yield empty tokens for whitespace at either end of a text: drop them.
    lengths = pc.binary_length(tokens)
    if len(tokens) == 0 or pc.min(lengths).as_py() > 0:
        return tokens, offsets
    kept = lengths.to_numpy() > 0
    kept_before = np.concatenate(([0], np.cumsum(kept)))
    return tokens.filter(pa.array(kept)), kept_before[offsets]
