"""Tokenizer stage: nanochat-style (rustbpe + tiktoken) and GPT-NeoX-style (HF tokenizers), exported for transformers."""

from __future__ import annotations

import json
import logging
import pickle
import re
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nanogerman.config import ConfigError, validate_config
from nanogerman.schema import schema_defaults
from nanogerman.tokenizer_training import (
    TokenizerError,
    TokenizerSpec,
    iter_texts,
    tiktoken_to_tokenizers,
    train_nanochat,
    train_tokenizer,
)

VOCAB = 1024
SPECIAL_TOKENS = schema_defaults("tokenizers", "items")["special_tokens"]  # what a tokenizer gets unless configured
GERMAN = (
    "Größere Übungen für Änderungen: Die Straße ist 12,5 km lang, daß weiß jeder. "
    "Öl kostet 1.234,56 € – „Anführungszeichen“ und ‚einfache‘… 😀🚀 日本語の文章 ß ẞ\n\n"
    "Zeile\tmit Tab  und  doppelten Leerzeichen.\r\nEnde"
)


def train_shards(sample_dir: Path) -> list[Path]:
    return [sample_dir / f"shard_0000{index}.parquet" for index in range(4)]


def sample_lines(sample_dir: Path) -> list[str]:
    """Every non-empty line of the sample, and every sentence of those lines: a few thousand texts."""
    lines = [line for text in iter_texts(sorted(sample_dir.glob("shard_*.parquet"))) for line in text.split("\n") if line.strip()]
    sentences = [sentence for line in lines for sentence in re.split(r"(?<=[.!?]) ", line)]
    return lines + sentences


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_dir):
    """Both kinds trained once on the sample's training shards."""
    root = tmp_path_factory.mktemp("tokenizers")
    stats = {}
    for kind in ("nanochat", "neox"):
        stats[kind] = train_tokenizer(
            TokenizerSpec.from_schema(name=f"t_{kind}", kind=kind, vocab_size=VOCAB), train_shards(sample_dir), root / kind
        )
    return root, stats


def auto_tokenizer(folder: Path, **kwargs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)


# --- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nanochat", "neox"])
def test_retraining_gives_byte_identical_files(trained, sample_dir, tmp_path, kind):
    root, _ = trained
    train_tokenizer(
        TokenizerSpec.from_schema(name=f"t_{kind}", kind=kind, vocab_size=VOCAB), train_shards(sample_dir), tmp_path / kind
    )
    names = ["tokenizer.json", "tokenizer_config.json"] + (["tokenizer.pkl"] if kind == "nanochat" else [])
    for name in names:
        assert (tmp_path / kind / name).read_bytes() == (root / kind / name).read_bytes(), name
    assert sorted(path.name for path in (root / kind).iterdir()) == sorted(names + ["stats.json"])


# --- round trips ---------------------------------------------------------------------------


def test_nanochat_round_trip_on_german_emoji_and_cjk(trained):
    root, _ = trained
    encoding = pickle.loads((root / "nanochat" / "tokenizer.pkl").read_bytes())
    tokenizer = auto_tokenizer(root / "nanochat")
    for text in (GERMAN, " führende Leerzeichen", "1234567890", ""):
        assert encoding.decode(encoding.encode_ordinary(text)) == text
        assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True) == text


def test_neox_round_trip_is_exact_up_to_nfkc_and_the_prefix_space(trained):
    """The neox kind normalizes with NFKC, then adds a space in front unless the text starts with one.

    Decoding gives exactly that text back, nothing else.
    """
    root, _ = trained
    tokenizer = auto_tokenizer(root / "neox")

    def expected(text: str) -> str:
        normalized = unicodedata.normalize("NFKC", text)
        return normalized if normalized.startswith(" ") else " " + normalized

    for text in (GERMAN, "1234567890", " schon mit Leerzeichen"):
        assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True) == expected(text)
    # What NFKC changes, exactly: compatibility characters are folded; German letters, €, quotes, emoji and CJK stay.
    changed = {"ﬁ": "fi", "²": "2", "½": "1⁄2", "Ⅻ": "XII", "…": "...", "a\u00a0b": "a b", "ｆｕｌｌ": "full", "Å": "Å"}
    for before, after in changed.items():
        assert unicodedata.normalize("NFKC", before) == after
        assert tokenizer.decode(tokenizer.encode(before), skip_special_tokens=True) == " " + after
    for kept in ("äöüÄÖÜßẞ", "€", "„“‚‘", "😀", "日本語"):
        assert tokenizer.decode(tokenizer.encode(kept), skip_special_tokens=True) == " " + kept


# --- tiktoken and the Hugging Face export agree --------------------------------------------


def test_tiktoken_and_hf_export_give_identical_ids(trained, sample_dir):
    root, _ = trained
    encoding = pickle.loads((root / "nanochat" / "tokenizer.pkl").read_bytes())
    tokenizer = auto_tokenizer(root / "nanochat")
    lines = sample_lines(sample_dir)
    assert len(lines) > 2000
    expected = encoding.encode_ordinary_batch(lines)
    got = tokenizer(lines, add_special_tokens=False)["input_ids"]
    assert got == expected
    with_bos = tokenizer(lines[:50])["input_ids"]
    assert with_bos == [[encoding.encode_single_token("<|bos|>")] + ids for ids in expected[:50]]


# --- special tokens, BOS and the ids transformers sees -------------------------------------


@pytest.mark.parametrize("kind", ["nanochat", "neox"])
def test_export_loads_offline_with_bos_eos_pad_right(trained, kind):
    root, stats = trained
    tokenizer = auto_tokenizer(root / kind)
    bos_id = tokenizer.convert_tokens_to_ids("<|bos|>")
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|bos|>",) * 3
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id == bos_id
    assert stats[kind]["bos_token_id"] == stats[kind]["eos_token_id"] == stats[kind]["pad_token_id"] == bos_id
    assert stats[kind]["special_tokens"] == {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    expected_ids = list(range(VOCAB - 9, VOCAB)) if kind == "nanochat" else list(range(9))
    assert list(stats[kind]["special_tokens"].values()) == expected_ids
    assert len(tokenizer) == stats[kind]["vocab_size"] == VOCAB
    # documents start with <|bos|>; MaxText's add_bos_token=False turns that off
    ids = tokenizer.encode("Guten Morgen")
    assert ids[0] == bos_id and bos_id not in ids[1:]
    assert tokenizer.encode("Guten Morgen", add_special_tokens=False) == ids[1:]
    assert auto_tokenizer(root / kind, add_bos_token=False).encode("Guten Morgen") == ids[1:]
    # special tokens in text are single tokens
    assert tokenizer.encode("<|user_start|>Hallo<|user_end|>", add_special_tokens=False)[0] == tokenizer.convert_tokens_to_ids(
        "<|user_start|>"
    )


def test_stats_record_what_was_seen(trained, sample_dir):
    _, stats = trained
    texts = list(iter_texts(train_shards(sample_dir)))
    for kind in ("nanochat", "neox"):
        assert stats[kind]["documents"] == len(texts)
        assert stats[kind]["characters"] == sum(map(len, texts))
        assert stats[kind]["vocab_size_reached"] is True
        assert set(stats[kind]["versions"]) >= {"rustbpe", "tiktoken", "tokenizers", "transformers"}
        assert stats[kind]["training_seconds"] > 0


# --- caps, unreachable vocab sizes, bad input ------------------------------------------------


def test_caps_on_characters_and_document_length(sample_dir):
    from nanogerman.tokenizer_training import TextCounter

    counter = TextCounter()
    texts = list(iter_texts(train_shards(sample_dir), max_chars=10_000, max_doc_chars=700, counter=counter))
    assert sum(map(len, texts)) == 10_000 == counter.characters
    assert max(map(len, texts)) <= 700
    whole = list(iter_texts(train_shards(sample_dir)))[: len(texts)]
    assert counter.stopped_at_max_chars and counter.documents == len(texts)
    assert counter.truncated_documents == sum(len(text) > 700 for text in whole)
    assert texts[:-1] == [text[:700] for text in whole[:-1]]


@pytest.mark.parametrize("kind", ["nanochat", "neox"])
def test_unreachable_vocab_size_warns_and_is_recorded(tmp_path, kind, caplog):
    shard = tmp_path / "tiny.parquet"
    pq.write_table(pa.table({"text": ["Hallo Welt, hallo Welt."] * 3}), shard)
    with caplog.at_level(logging.WARNING):
        stats = train_tokenizer(TokenizerSpec.from_schema(name="tiny", kind=kind, vocab_size=5000), [shard], tmp_path / "out")
    assert stats["vocab_size"] < 5000 and stats["vocab_size_reached"] is False
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["vocab_size"] == stats["vocab_size"]
    assert f"gave only {stats['vocab_size']} of the 5000 tokens asked for" in caplog.text
    assert len(auto_tokenizer(tmp_path / "out")) == stats["vocab_size"]


def test_vocab_size_below_bytes_and_specials_is_a_config_error(base_config):
    base_config["tokenizers"][0]["vocab_size"] = 260
    with pytest.raises(ConfigError) as caught:
        validate_config(base_config)
    assert str(caught.value) == (
        "config error: tokenizers[0].vocab_size is 260; it must be at least 265 (256 byte tokens + 9 special tokens)"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(kind="sentencepiece"), "tokenizers[0].kind is 'sentencepiece'; expected one of 'nanochat', 'neox'"),
        (
            lambda t: t.update(shards="vocab"),
            "tokenizers[0].shards is 'vocab'; expected the name of a shard set in corpus.shard_sets",
        ),
        (lambda t: t.update(vocab_size="big"), "tokenizers[0].vocab_size is 'big' (str); expected integer"),
        (lambda t: t.update(name="Bad Name"), "tokenizers[0].name is 'Bad Name'; expected a name of lowercase letters"),
        (lambda t: t.pop("shards"), "missing key tokenizers[0].shards"),
    ],
    ids=["kind", "shard set", "vocab type", "name", "no shards"],
)
def test_bad_tokenizer_config_is_one_line(base_config, change, message):
    change(base_config["tokenizers"][0])
    with pytest.raises(ConfigError) as caught:
        validate_config(base_config)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_duplicate_tokenizer_names(base_config):
    base_config["tokenizers"][1]["name"] = base_config["tokenizers"][0]["name"]
    with pytest.raises(ConfigError, match=r"tokenizers\[1\].name 'sample_nanochat' is used twice"):
        validate_config(base_config)


def test_no_text_is_a_clear_error_and_leaves_nothing(tmp_path):
    shard = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": ["", ""]}), shard)
    with pytest.raises(TokenizerError, match=r"tokenizer 'x': the shards hold no text \(empty.parquet\)"):
        train_tokenizer(TokenizerSpec.from_schema(name="x", kind="nanochat", vocab_size=300), [shard], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_conversion_keeps_tiktoken_special_ids():
    encoding = train_nanochat(["abc abd abe " * 20], TokenizerSpec.from_schema(name="x", kind="nanochat", vocab_size=280))
    tokenizer = tiktoken_to_tokenizers(encoding)
    assert [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS] == [encoding.encode_single_token(t) for t in SPECIAL_TOKENS]


@pytest.mark.slow
def test_workflow_trains_both_tokenizers(tmp_path, base_config, snakemake_run):
    result = snakemake_run(tmp_path, base_config, "results/tokenizers/sample_nanochat", "results/tokenizers/sample_neox")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("sample_nanochat", "sample_neox"):
        stats = json.loads((tmp_path / "results" / "tokenizers" / name / "stats.json").read_text())
        assert stats["vocab_size"] == base_config["tokenizers"][0]["vocab_size"]
        assert auto_tokenizer(tmp_path / "results" / "tokenizers" / name).bos_token == "<|bos|>"
        assert (tmp_path / "results" / "logs" / "tokenizers" / f"{name}.log").is_file()
