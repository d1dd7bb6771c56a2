"""Tokenizer stage: train BPE tokenizers on corpus shards and export them for Hugging Face.

Two kinds, both byte-level BPE with the same special tokens:

- ``nanochat``: ``rustbpe`` with nanochat's split pattern, wrapped in a
  ``tiktoken.Encoding`` whose special tokens come after the merges (saved as
  ``tokenizer.pkl``), then converted to a Hugging Face fast tokenizer.
- ``neox``: Hugging Face ``tokenizers`` BPE with an NFKC normalizer and a ByteLevel
  pre-tokenizer (``add_prefix_space=True``), decoder and post-processor, like
  GPT-NeoX; the trainer puts the special tokens first (ids 0 …).

Every export prepends the first special token (``<|bos|>`` by default) to each encoded
text, so the documents the model trains on start with it; eos and pad are the same
token (see README.md, "Tokenizers"). ``encode(text, add_special_tokens=False)`` gives
the plain ids, and ``AutoTokenizer.from_pretrained(..., add_bos_token=False)`` (what
MaxText passes when ``add_bos`` is off) turns the BOS off.

The module is named ``tokenizer_training`` so that it never shadows the Hugging Face
``tokenizers`` package.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Full, Queue
from typing import Any

from nanogerman.atomic import atomic_path, write_json
from nanogerman.errors import StageError
from nanogerman.provenance import package_versions
from nanogerman.schema import schema_defaults
from nanogerman.scratch import scratch_dir
from nanogerman.text_column import TEXT_COLUMN, parquet_text_batches

log = logging.getLogger(__name__)

KINDS = ("nanochat", "neox")
# nanochat's pre-tokenization: GPT-4's pattern, but numbers split into runs of at most
# two digits (GPT-4: three), which spends fewer tokens on numbers in a small vocabulary.
NANOCHAT_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
BYTE_TOKENS = 256
READ_AHEAD = 4  # parquet record batches decoded ahead of the trainer
PICKLE_PROTOCOL = 4  # fixed, so tokenizer.pkl does not change with the Python version
# Written into tokenizer_config.json: a class name that transformers 4.x and 5.x both load
# (5.x would otherwise write its own "TokenizersBackend", unknown to 4.x).
HF_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
HF_MODEL_MAX_LENGTH = int(1e30)  # transformers' "no limit" (VERY_LARGE_INTEGER)


class TokenizerError(StageError):
    """A tokenizer cannot be trained as configured."""


@dataclass(frozen=True)
class TokenizerSpec:
    """One entry of ``tokenizers`` in the config."""

    name: str
    kind: str
    vocab_size: int
    max_chars: int | None
    max_doc_chars: int | None
    special_tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TokenizerError(f"tokenizer {self.name!r}: kind is {self.kind!r}; expected one of {', '.join(KINDS)}")
        check_vocab_size(self.vocab_size, self.special_tokens, f"tokenizer {self.name!r}: vocab_size")

    @classmethod
    def from_config(cls, entry: dict) -> TokenizerSpec:
        return cls(
            name=entry["name"],
            kind=entry["kind"],
            vocab_size=int(entry["vocab_size"]),
            max_chars=entry["max_chars"],
            max_doc_chars=entry["max_doc_chars"],
            special_tokens=tuple(entry["special_tokens"]),
        )

    @classmethod
    def from_schema(cls, name: str, kind: str, **changes: Any) -> TokenizerSpec:
        """A tokenizer ``name`` of ``kind`` with the schema's defaults and ``changes`` on top (tests)."""
        return cls.from_config({**schema_defaults("tokenizers", "items"), "name": name, "kind": kind, **changes})

    @property
    def bos_token(self) -> str:
        """The document delimiter: the first special token. Also used as eos and pad."""
        return self.special_tokens[0]


def minimum_vocab_size(special_tokens: Iterable[str]) -> int:
    """The smallest vocabulary: every byte plus the special tokens, no merges."""
    return BYTE_TOKENS + len(tuple(special_tokens))


def check_vocab_size(vocab_size: int, special_tokens: Iterable[str], key: str) -> None:
    """Raise a one-line error if ``vocab_size`` cannot hold the 256 bytes and the special tokens."""
    special_tokens = tuple(special_tokens)
    needed = minimum_vocab_size(special_tokens)
    if vocab_size < needed:
        raise TokenizerError(
            f"config error: {key} is {vocab_size}; it must be at least {needed} "
            f"(256 byte tokens + {len(special_tokens)} special tokens)"
        )


# --- training text -------------------------------------------------------------------------


@dataclass
class TextCounter:
    """What the trainer saw: filled in while the text iterator runs."""

    documents: int = 0
    characters: int = 0
    truncated_documents: int = 0  # cut to max_doc_chars
    stopped_at_max_chars: bool = False
    shards: list[str] = field(default_factory=list)


def iter_texts(
    shard_paths: Iterable[str | Path],
    *,
    max_chars: int | None = None,
    max_doc_chars: int | None = None,
    counter: TextCounter | None = None,
    batch_size: int = 1024,
    read_ahead: int = 0,
) -> Iterator[str]:
    """Yield the documents of the shards in order, a record batch at a time.

    Each document is cut to ``max_doc_chars`` characters; the text stops after
    ``max_chars`` characters in total, cutting the document that crosses the cap, so
    exactly ``min(max_chars, available)`` characters are yielded. Empty documents are
    skipped. ``counter`` (if given) records what was yielded. With ``read_ahead`` > 0 a
    background thread decodes up to that many batches ahead (see :func:`read_ahead_of`).
    """
    batches = text_batches(shard_paths, max_chars=max_chars, max_doc_chars=max_doc_chars, counter=counter, batch_size=batch_size)
    if read_ahead > 0:
        batches = read_ahead_of(batches, read_ahead)
    for batch in batches:
        yield from batch


def text_batches(
    shard_paths: Iterable[str | Path],
    *,
    max_chars: int | None = None,
    max_doc_chars: int | None = None,
    counter: TextCounter | None = None,
    batch_size: int = 1024,
) -> Iterator[list[str]]:
    """The documents of :func:`iter_texts` as lists, one per parquet record batch."""
    counter = counter if counter is not None else TextCounter()
    remaining = max_chars
    for path in shard_paths:
        path = Path(path)
        counter.shards.append(path.name)
        for batch in parquet_text_batches(path, column=TEXT_COLUMN, batch_size=batch_size, error=TokenizerError):
            texts = []
            for text in batch.to_pylist():
                if not text:
                    continue
                if max_doc_chars is not None and len(text) > max_doc_chars:
                    text = text[:max_doc_chars]
                    counter.truncated_documents += 1
                if remaining is not None and len(text) >= remaining:
                    texts.append(text[:remaining])
                    remaining = 0
                    break
                if remaining is not None:
                    remaining -= len(text)
                texts.append(text)
            counter.documents += len(texts)
            counter.characters += sum(map(len, texts))
            if texts:
                yield texts
            if remaining == 0:
                counter.stopped_at_max_chars = True
                return


def read_ahead_of(batches: Iterator[list[str]], depth: int) -> Iterator[list[str]]:
    """Run ``batches`` in a background thread, up to ``depth`` items ahead of the consumer.

    rustbpe and ``tokenizers`` release the GIL while they count pairs in a batch of text,
    so the next parquet batch is decoded meanwhile instead of between their refills.
    An exception in the thread is raised in the consumer.
    """
    finished = object()
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.05)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(finished)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)

    thread = threading.Thread(target=produce, name="nanogerman-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not finished:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


# --- trainers: the bare library calls --------------------------------------------------------


def train_nanochat(texts: Iterable[str], spec: TokenizerSpec):
    """Train with rustbpe; return a ``tiktoken.Encoding`` with the special tokens after the merges."""
    import rustbpe
    import tiktoken

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), spec.vocab_size - len(spec.special_tokens), pattern=NANOCHAT_SPLIT_PATTERN)
    ranks = {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}
    first_special = len(ranks)
    return tiktoken.Encoding(
        name=spec.name,
        pat_str=trainer.get_pattern(),
        mergeable_ranks=ranks,
        special_tokens={token: first_special + offset for offset, token in enumerate(spec.special_tokens)},
    )


def neox_tokenizer():
    """An untrained GPT-NeoX-style byte-level BPE pipeline (NFKC, ByteLevel with prefix space)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel()
    return tokenizer


def train_neox(texts: Iterable[str], spec: TokenizerSpec):
    """Train a GPT-NeoX-style BPE with Hugging Face ``tokenizers``; special tokens get ids 0 …."""
    from tokenizers import pre_tokenizers, trainers

    tokenizer = neox_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(spec.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


# --- export to Hugging Face ------------------------------------------------------------------


def import_converter_in_background() -> threading.Thread:
    """Import transformers' tiktoken converter in a thread while the trainer runs.

    The import costs about a second of Python work; rustbpe releases the GIL while it
    counts pairs, so on two or more cores the import is free when started first.
    """

    def load() -> None:
        import transformers.integrations.tiktoken  # noqa: F401

    thread = threading.Thread(target=load, name="nanogerman-import-transformers", daemon=True)
    thread.start()
    return thread


def tiktoken_to_tokenizers(encoding):
    """A ``tokenizers.Tokenizer`` that encodes like ``encoding``, by transformers' ``convert_tiktoken_to_fast``."""
    from tokenizers import Tokenizer
    from transformers.integrations.tiktoken import convert_tiktoken_to_fast

    with scratch_dir("tiktoken") as scratch:
        convert_tiktoken_to_fast(encoding, scratch)
        tokenizer = Tokenizer.from_file(str(Path(scratch) / "tokenizer.json"))
    for token, token_id in encoding._special_tokens.items():
        if tokenizer.token_to_id(token) != token_id:
            raise RuntimeError(f"special token {token!r} got id {tokenizer.token_to_id(token)}, tiktoken has {token_id}")
    return tokenizer


def add_bos_post_processor(tokenizer, bos_token: str) -> None:
    """Make ``tokenizer`` prepend ``bos_token`` to every encoded text (and to each of a pair)."""
    from tokenizers import processors

    bos_id = tokenizer.token_to_id(bos_token)
    if bos_id is None:
        raise TokenizerError(f"the BOS token {bos_token!r} is not in the vocabulary")
    template = processors.TemplateProcessing(
        single=f"{bos_token} $A",
        pair=f"{bos_token} $A {bos_token}:1 $B:1",
        special_tokens=[(bos_token, bos_id)],
    )
    # Keep the byte-level step (it only fixes offsets) ahead of the template.
    steps = [tokenizer.post_processor, template] if tokenizer.post_processor is not None else [template]
    tokenizer.post_processor = processors.Sequence(steps)


def hf_tokenizer_config(spec: TokenizerSpec) -> dict[str, Any]:
    """``tokenizer_config.json``: what ``save_pretrained`` writes, with a portable class name.

    bos, eos and pad are all the document delimiter. ``clean_up_tokenization_spaces`` is
    off, so ``decode`` does not remove spaces before punctuation (that would break
    ``decode(encode(x)) == x``). ``add_bos_token``/``add_eos_token`` state what the
    post-processor does; transformers 5 rebuilds the post-processor from them when a
    caller passes them (as MaxText does).
    """
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "backend": "tokenizers",
        "bos_token": spec.bos_token,
        "clean_up_tokenization_spaces": False,
        "eos_token": spec.bos_token,
        "model_max_length": HF_MODEL_MAX_LENGTH,
        "pad_token": spec.bos_token,
        "tokenizer_class": HF_TOKENIZER_CLASS,
    }


def save_hf_tokenizer(tokenizer, spec: TokenizerSpec, folder: Path) -> None:
    """Write ``tokenizer.json`` (BOS added by the post-processor) and ``tokenizer_config.json``."""
    add_bos_post_processor(tokenizer, spec.bos_token)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(hf_tokenizer_config(spec), indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def check_same_ids(encoding, tokenizer, texts: Iterable[str]) -> int:
    """Check that tiktoken and the converted tokenizer give the same ids; return texts checked.

    A mismatch is a bug in the conversion, not bad input, so it raises ``RuntimeError``.
    Texts containing a special token's spelling are skipped: tiktoken's
    ``encode_ordinary`` reads them as text, the Hugging Face tokenizer as the token.
    """
    checked = 0
    for text in texts:
        if "<|" in text:
            continue
        expected = encoding.encode_ordinary(text)
        got = tokenizer.encode(text, add_special_tokens=False).ids
        if got != expected:
            raise RuntimeError(f"tiktoken and the Hugging Face export disagree on {text[:60]!r}: {expected[:8]} vs {got[:8]}")
        checked += 1
    return checked


# --- the stage -------------------------------------------------------------------------------


def library_versions() -> dict[str, str | None]:
    return package_versions(("rustbpe", "tiktoken", "tokenizers", "transformers", "pyarrow"))


def train_tokenizer(
    spec: TokenizerSpec,
    shard_paths: list[str | Path],
    out_dir: str | Path,
    *,
    check_texts: int = 16,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Train the tokenizer ``spec`` on ``shard_paths`` and write ``out_dir`` as a whole.

    ``out_dir`` gets ``tokenizer.json`` and ``tokenizer_config.json`` (load with
    ``AutoTokenizer.from_pretrained``), ``tokenizer.pkl`` (nanochat kind: the
    ``tiktoken.Encoding``) and ``stats.json``. Returns the stats. The first
    ``check_texts`` training documents are re-encoded to check the export.
    """
    if not shard_paths:
        raise TokenizerError(f"tokenizer {spec.name!r}: no shards to train on")
    out_dir = Path(out_dir)
    counter = TextCounter()
    texts = iter_texts(
        shard_paths, max_chars=spec.max_chars, max_doc_chars=spec.max_doc_chars, counter=counter, read_ahead=READ_AHEAD
    )
    # Keep a few documents for the export check while they stream past.
    kept: list[str] = []

    def keeping(stream: Iterator[str]) -> Iterator[str]:
        for text in stream:
            if len(kept) < check_texts:
                kept.append(text)
            yield text

    started = clock()
    encoding = None
    if spec.kind == "nanochat":
        converter_import = import_converter_in_background()
        encoding = train_nanochat(keeping(texts), spec)
        training_seconds = clock() - started
        converter_import.join()
        tokenizer = tiktoken_to_tokenizers(encoding)
    else:
        tokenizer = train_neox(keeping(texts), spec)
        training_seconds = clock() - started
    if counter.documents == 0:
        raise TokenizerError(f"tokenizer {spec.name!r}: the shards hold no text ({', '.join(counter.shards)})")
    reached = tokenizer.get_vocab_size()
    if reached < spec.vocab_size:
        log.warning(
            "tokenizer %s: the training text (%d characters) gave only %d of the %d tokens asked for "
            "(vocab_size); train on more text or lower vocab_size",
            spec.name,
            counter.characters,
            reached,
            spec.vocab_size,
        )
    checked = check_same_ids(encoding, tokenizer, kept) if encoding is not None else 0

    special_ids = {token: tokenizer.token_to_id(token) for token in spec.special_tokens}
    bos_id = special_ids[spec.bos_token]
    stats: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind,
        "vocab_size_requested": spec.vocab_size,
        "vocab_size": reached,
        "vocab_size_reached": reached >= spec.vocab_size,
        "special_tokens": special_ids,
        "bos_token": spec.bos_token,
        "eos_token": spec.bos_token,
        "pad_token": spec.bos_token,
        "bos_token_id": bos_id,
        "eos_token_id": bos_id,
        "pad_token_id": bos_id,
        "adds_bos": True,
        "documents": counter.documents,
        "characters": counter.characters,
        "truncated_documents": counter.truncated_documents,
        "stopped_at_max_chars": counter.stopped_at_max_chars,
        "max_chars": spec.max_chars,
        "max_doc_chars": spec.max_doc_chars,
        "shards": counter.shards,
        "training_seconds": round(training_seconds, 3),
        "export_checked_texts": checked,
        "versions": library_versions(),
    }
    if spec.kind == "nanochat":
        stats["split_pattern"] = NANOCHAT_SPLIT_PATTERN
    else:
        stats["normalizer"] = "NFKC"
        stats["pre_tokenizer"] = "ByteLevel(add_prefix_space=True)"

    with atomic_path(out_dir, directory=True) as folder:
        if encoding is not None:
            with open(folder / "tokenizer.pkl", "wb") as handle:
                pickle.dump(encoding, handle, protocol=PICKLE_PROTOCOL)
        save_hf_tokenizer(tokenizer, spec, folder)
        stats["seconds"] = round(clock() - started, 3)
        write_json(folder / "stats.json", stats)
    log.info(
        "tokenizer %s (%s): vocab %d of %d, %d documents, %d characters, trained in %.2f s, %.2f s in all",
        spec.name,
        spec.kind,
        reached,
        spec.vocab_size,
        counter.documents,
        counter.characters,
        training_seconds,
        stats["seconds"],
    )
    return stats
