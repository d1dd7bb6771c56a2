"""Batch tokens after NFKC and lowercasing: the same as Python's per-text definition, and why the fast path may be taken."""

from __future__ import annotations

import random
import sys
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from nanogerman.contamination import normalized_tokens
from nanogerman.text_tokens import NON_ASCII_SPACE, PLAIN_RANGES, batch_tokens, not_plain

ASCII_SPACE = " \t\n\x0b\x0c\r"
PLAIN = {chr(code) for first, last in PLAIN_RANGES for code in range(first, last + 1)}
EVERY_CHARACTER = [chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code < 0xE000]


def _composition_seconds() -> set[str]:
    """Characters that canonical composition may join to the character before them (NFC/NFKC quick check: Maybe)."""
    seconds = {chr(code) for code in [*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)]}  # Hangul vowels and trailing consonants
    for character in EVERY_CHARACTER:
        parts = unicodedata.decomposition(character).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            seconds.add(chr(int(parts[1], 16)))
    return seconds


def test_plain_characters_are_nfkc_and_lowercased_alike_by_python_and_pyarrow():
    assert len(PLAIN) > 600 and "ä" in PLAIN and "ß" in PLAIN and "„" in PLAIN
    seconds = _composition_seconds()
    assert "\u0301" in seconds  # the check can fail: the combining acute accent composes with a letter before it
    plain = sorted(PLAIN)
    arrow_lower = pc.utf8_lower(pa.array(plain)).to_pylist()
    for character, lowered in zip(plain, arrow_lower, strict=True):
        assert unicodedata.is_normalized("NFKC", character), hex(ord(character))
        assert unicodedata.combining(character) == 0 and character not in seconds, hex(ord(character))
        assert lowered == character.lower() and len(lowered) == 1, hex(ord(character))
        assert not character.isspace() or character in ASCII_SPACE, hex(ord(character))
    assert {chr(code) for code in range(128)} - PLAIN == set("\x1c\x1d\x1e\x1f")  # not_plain's one ASCII check
    assert "\u03a3" not in PLAIN  # capital sigma: str.lower depends on the letters around it (final sigma)
    for excluded in ("İ", "½", "ſ", "\xa0", "\x1c", "…", "Ａ"):
        assert excluded not in PLAIN  # the check can fail: these change under NFKC or lowercase differently in pyarrow


def test_whitespace_beyond_ascii_is_what_ascii_split_misses():
    samples = pa.array([f"a{character}b" for character in EVERY_CHARACTER])
    unicode_splits = pc.list_value_length(pc.utf8_split_whitespace(samples)).to_numpy() == 2
    ascii_splits = pc.list_value_length(pc.ascii_split_whitespace(samples)).to_numpy() == 2
    python_spaces = np.array([character.isspace() for character in EVERY_CHARACTER])
    assert np.array_equal(unicode_splits, python_spaces)  # pyarrow's Unicode whitespace is str.split's
    assert {c for c, split in zip(EVERY_CHARACTER, ascii_splits, strict=True) if split} == set(ASCII_SPACE)
    other = {c for c, space in zip(EVERY_CHARACTER, python_spaces, strict=True) if space} - set(ASCII_SPACE)
    assert {c for c in other if NON_ASCII_SPACE.fullmatch(c)} == other
    assert not any(NON_ASCII_SPACE.fullmatch(c) for c in ASCII_SPACE + "ab\u200b")


def _token_lists(texts: pa.Array) -> list[list[str]]:
    tokens, offsets = batch_tokens(texts)
    tokens = tokens.to_pylist()
    return [tokens[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)]


def _random_texts(count: int, seed: int) -> list[str | None]:
    rare = list("İΣσς½ſ…ＡＢ\xa0\x1c\x85\u2028\u3000\u0301\u0308ﬁ²µ") + ["e\u0301", "ΟΔΟΣ", "ΟΔΟΣ.", "🙂", "\U0001d400"]
    common = list("aAbBzZäÄöÖüÜßẞéÉ.,;„“–—»«'-0123456789") + [" ", " ", " ", "\n", "\t"]
    chooser = random.Random(seed)
    texts: list[str | None] = [None, "", "   ", " \tvorn und hinten\n", "\u3000\u3000", "Nur ASCII", "ΟΔΟΣ ΟΔΟΣ", "endet mit ä"]
    for _ in range(count):
        pool = common + rare if chooser.random() < 0.3 else common
        texts.append("".join(chooser.choice(pool) for _ in range(chooser.randrange(0, 60))))
    return texts


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.string_view()])
def test_batch_tokens_are_python_nfkc_lowercase_split(kind):
    texts = _random_texts(1500, seed=len(str(kind)))
    array = pa.array(["unused", *texts], kind)[1:]  # a slice: offsets that do not start at zero
    expected = [normalized_tokens(text or "") for text in texts]
    assert _token_lists(array) == expected
    assert sum(not all(c in PLAIN for c in text or "") for text in texts) > 100  # both paths are taken
    for start in (0, 5, len(texts) - 1):  # batches without any non-plain text, or with one
        assert _token_lists(array[start : start + 1]) == expected[start : start + 1]
    for text in ("a\x1cb", "a\xa0b", "a\u2028b", "ΟΔΟΣ ΟΔΟΣ.", "İstanbul", "Ｆｕｌｌ ½"):  # each alone in its batch
        assert _token_lists(pa.array([text], kind)) == [normalized_tokens(text)]


def test_not_plain_marks_the_texts_with_a_character_outside_the_plain_ranges():
    texts = [text or "" for text in _random_texts(800, seed=3)]
    array = pa.array(["x", *texts])[1:]
    assert not_plain(array).tolist() == [not all(c in PLAIN for c in text) for text in texts]
    assert not_plain(pa.array([], pa.string())).tolist() == []
    assert not_plain(pa.array(["a\x1cb", "ab", "ä", "a½", "ä\U0001f642", "€"])).tolist() == [1, 0, 0, 1, 1, 0]
