"""Tokenizer evaluation stage: GerTokEval's metrics for trained and reference tokenizers.

Every text is encoded with the tokenizer's default ``encode`` (special tokens included,
as ``AutoTokenizer.from_pretrained(...).encode(text)`` does); empty texts are skipped, and so,
as in GerTokEval (``if not text.strip()``), are whitespace-only ones (``whitespace_texts_skipped``).
For the texts ``i`` of all datasets pooled, with ``n_i`` tokens, ``b_i`` UTF-8 bytes,
``c_i`` characters and ``l_i = len(text.split("\\n"))`` lines:

- fertility = mean of ``n_i / b_i`` (lower is better);
- token length = mean of ``c_i / n_i``;
- vocabulary utilization = distinct ids used / ``len(tokenizer.get_vocab())``;
- type-token ratio = distinct ids / all ids;
- tokens per line = mean of ``n_i / l_i``;
- bytes per token = sum of ``b_i`` / sum of ``n_i`` (not in GerTokEval's table).

The same metrics are also computed for each dataset alone. Texts are encoded in batches:
through tiktoken's batch API for a trained nanochat tokenizer (its ``tokenizer.pkl``),
otherwise through the fast tokenizer's Rust batch API. The first texts are also encoded
one at a time with ``encode``, and the batch encoder is used only if the ids agree.

Reading the texts and fetching the datasets: :mod:`nanogerman.tokenizer_eval_data`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanogerman.atomic import write_json
from nanogerman.errors import first_line
from nanogerman.manifests import read_tokenizer_stats
from nanogerman.provenance import package_versions
from nanogerman.tokenizer_eval_data import EvalDataset, TokenizerEvalError, read_text_batches

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
CHECK_TEXTS = 16  # texts per dataset re-encoded one at a time to check the batch encoder


# --- metrics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    title: str  # the seed's column title
    fmt: str  # the seed's number format
    higher_is_better: bool  # which value the tables print in bold
    meaning: str


METRICS = (
    Metric("fertility", "Fertility", "{:.3f}", False, "tokens per UTF-8 byte, mean over texts"),
    Metric("vocab_utilization", "Vocab Utilization", "{:.1%}", True, "distinct token ids used / vocabulary size"),
    Metric("type_token_ratio", "Type-Token Ratio", "{:.4f}", True, "distinct token ids / all token ids"),
    Metric("token_length", "Token Length", "{:.2f}", True, "characters per token, mean over texts"),
    # The seed's table prints the highest tokens per line in bold; kept for the same table.
    Metric("tokens_per_line", "Tokens per Line", "{:.1f}", True, "tokens per line, mean over texts"),
)
EXTRA_METRICS = (Metric("bytes_per_token", "Bytes per Token", "{:.2f}", True, "all UTF-8 bytes / all tokens"),)
ALL_METRICS = METRICS + EXTRA_METRICS
METRIC_BY_KEY = {metric.key: metric for metric in ALL_METRICS}


@dataclass
class TextStats:
    """Sums over encoded texts, from which the metrics follow; datasets merge by addition."""

    texts: int = 0
    zero_token_texts: int = 0  # non-empty texts that encode to no token: left out of token length
    whitespace_texts_skipped: int = 0  # texts of whitespace only, skipped as GerTokEval does (not text.strip())
    tokens: int = 0
    bytes: int = 0
    characters: int = 0
    lines: int = 0
    fertility_sum: float = 0.0
    token_length_sum: float = 0.0
    tokens_per_line_sum: float = 0.0
    ids: set[int] = field(default_factory=set)

    def add(self, texts: list[str], token_ids: list[list[int]]) -> None:
        """Add non-empty ``texts`` and their ids, in order."""
        if len(texts) != len(token_ids):
            raise ValueError(f"{len(texts)} texts but {len(token_ids)} encodings")
        for text, ids in zip(texts, token_ids, strict=False):
            tokens = len(ids)
            size = len(text.encode("utf-8"))
            lines = text.count("\n") + 1  # == len(text.split("\n"))
            self.texts += 1
            self.tokens += tokens
            self.bytes += size
            self.characters += len(text)
            self.lines += lines
            self.fertility_sum += tokens / size
            self.tokens_per_line_sum += tokens / lines
            if tokens:
                self.token_length_sum += len(text) / tokens
            else:
                self.zero_token_texts += 1
            self.ids.update(ids)

    def merged(self, other: TextStats) -> TextStats:
        return TextStats(
            texts=self.texts + other.texts,
            zero_token_texts=self.zero_token_texts + other.zero_token_texts,
            whitespace_texts_skipped=self.whitespace_texts_skipped + other.whitespace_texts_skipped,
            tokens=self.tokens + other.tokens,
            bytes=self.bytes + other.bytes,
            characters=self.characters + other.characters,
            lines=self.lines + other.lines,
            fertility_sum=self.fertility_sum + other.fertility_sum,
            token_length_sum=self.token_length_sum + other.token_length_sum,
            tokens_per_line_sum=self.tokens_per_line_sum + other.tokens_per_line_sum,
            ids=self.ids | other.ids,
        )

    def metrics(self, vocab_size: int) -> dict[str, float | None]:
        """GerTokEval's metrics (None where no text was encoded)."""
        if self.texts == 0:
            return {metric.key: None for metric in ALL_METRICS}
        with_tokens = self.texts - self.zero_token_texts
        return {
            "fertility": self.fertility_sum / self.texts,
            "vocab_utilization": len(self.ids) / vocab_size,
            "type_token_ratio": len(self.ids) / self.tokens if self.tokens else None,
            "token_length": self.token_length_sum / with_tokens if with_tokens else None,
            "tokens_per_line": self.tokens_per_line_sum / self.texts,
            "bytes_per_token": self.bytes / self.tokens if self.tokens else None,
        }

    def totals(self) -> dict[str, int]:
        return {
            "texts": self.texts,
            "zero_token_texts": self.zero_token_texts,
            "whitespace_texts_skipped": self.whitespace_texts_skipped,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "characters": self.characters,
            "lines": self.lines,
            "distinct_ids": len(self.ids),
        }


# --- tokenizers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerSource:
    """A tokenizer to evaluate: a trained one (its results folder) or a reference (Hub id or folder)."""

    name: str
    path: str
    kind: str = "reference"  # "trained" or "reference"
    revision: str = "main"  # Hub ids only
    trust_remote_code: bool = False

    @classmethod
    def from_params(cls, params: dict) -> TokenizerSource:
        return cls(
            name=params["name"],
            path=str(params["path"]),
            kind=params.get("kind", "reference"),
            revision=params.get("revision") or "main",
            trust_remote_code=bool(params.get("trust_remote_code", False)),
        )

    @property
    def is_local(self) -> bool:
        return Path(self.path).is_dir()

    @property
    def label(self) -> str:
        hub = not self.is_local and self.kind != "trained" and HUB_ID.match(self.path)
        where = f"{self.path}@{self.revision}" if hub else self.path
        return f"{self.kind} tokenizer {self.name!r} ({where})"


def load_tokenizer(source: TokenizerSource):
    """``AutoTokenizer.from_pretrained`` on the folder or Hub id; any failure is one line naming the tokenizer."""
    local = source.is_local
    if not local and (source.kind == "trained" or not HUB_ID.match(source.path)):
        raise TokenizerEvalError(
            f"{source.label}: {source.path!r} is not a folder"
            + ("" if source.kind == "trained" else " and not a Hub repo id like 'dbmdz/german-gpt2'")
        )
    from transformers import AutoTokenizer

    options: dict[str, Any] = {"trust_remote_code": source.trust_remote_code}
    if not local:
        options["revision"] = source.revision
    try:
        return AutoTokenizer.from_pretrained(source.path, **options)
    except Exception as error:  # transformers raises OSError, ValueError, ImportError …: all mean "cannot load"
        message = first_line(error)
        if "trust_remote_code" in message and not source.trust_remote_code:
            hint = "it ships its own code: set trust_remote_code: true for it in tokenizer_eval.references if you trust the repo"
        elif local:
            hint = "the folder needs tokenizer.json or the files of a slow tokenizer, and tokenizer_config.json"
        else:
            hint = (
                "check the repo id and revision, and the network (HF_ENDPOINT for a mirror, HF_TOKEN for gated repos), "
                "or give a local folder"
            )
        raise TokenizerEvalError(f"{source.label}: cannot load it ({type(error).__name__}: {message}); {hint}") from None


def hub_commit(source: TokenizerSource) -> str | None:
    """The commit a Hub tokenizer was loaded from, read from the local Hub cache (None for folders)."""
    if source.is_local:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("tokenizer_config.json", "tokenizer.json", "config.json"):
        cached = try_to_load_from_cache(source.path, filename, revision=source.revision)
        if isinstance(cached, str) and Path(cached).parent.parent.name == "snapshots":
            return Path(cached).parent.name
    return None


Encoder = Callable[[list[str]], list[list[int]]]


def batch_encoders(
    tokenizer, *, trained_folder: str | Path | None = None, threads: int | None = None
) -> list[tuple[str, Encoder]]:
    """Batch encoders that should give ``tokenizer.encode``'s ids, fastest first, with their names.

    - a trained nanochat tokenizer's ``tokenizer.pkl`` (``trained_folder``): tiktoken's
      threaded ``encode_batch``, with the BOS the export adds (three times the speed of
      the export's own regex pre-tokenizer);
    - a fast tokenizer without truncation or padding set: the Rust
      ``tokenizers.Tokenizer.encode_batch_fast`` (parallel, no offsets computed);
    - always: transformers' own batch call ``tokenizer(texts)``.
    """
    from tokenizers import Tokenizer

    encoders = []
    if trained_folder is not None and (tiktoken_encode := tiktoken_encoder(trained_folder, threads)) is not None:
        encoders.append(("tiktoken.Encoding.encode_batch", tiktoken_encode))
    backend = getattr(tokenizer, "_tokenizer", None)
    if isinstance(backend, Tokenizer) and backend.truncation is None and backend.padding is None:

        def encode_fast(texts: list[str]) -> list[list[int]]:
            return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=True)]

        encoders.append(("tokenizers.Tokenizer.encode_batch_fast", encode_fast))
    encoders.append(("transformers batch call", transformers_batch_encoder(tokenizer)))
    return encoders


def tiktoken_encoder(folder: str | Path, threads: int | None = None) -> Encoder | None:
    """tiktoken's batch encoder for a trained nanochat tokenizer (``tokenizer.pkl`` + ``stats.json``), else None.

    Only for the workflow's own trained folders: unpickling runs code, so never for references.
    """
    import pickle

    import tiktoken

    pkl, stats_path = Path(folder) / "tokenizer.pkl", Path(folder) / "stats.json"
    if not pkl.is_file() or not stats_path.is_file():
        return None
    try:
        with open(pkl, "rb") as handle:
            encoding = pickle.load(handle)
        stats = read_tokenizer_stats(folder, error=TokenizerEvalError)
        prefix = [int(stats["bos_token_id"])] if stats.get("adds_bos") else []
    except Exception as error:  # an unreadable pickle only costs speed: the Hugging Face export is used instead
        log.warning("%s: cannot use tokenizer.pkl (%s); encoding with the Hugging Face export", folder, first_line(error))
        return None
    if not isinstance(encoding, tiktoken.Encoding):
        return None
    workers = max(1, threads or os.cpu_count() or 1)

    def encode(texts: list[str]) -> list[list[int]]:
        return [prefix + ids for ids in encoding.encode_batch(texts, allowed_special="all", num_threads=workers)]

    return encode


def transformers_batch_encoder(tokenizer) -> Encoder:
    def encode(texts: list[str]) -> list[list[int]]:
        encoded = tokenizer(
            texts, add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False, verbose=False
        )
        return [list(ids) for ids in encoded["input_ids"]]

    return encode


def one_at_a_time_encoder(tokenizer) -> Encoder:
    """The baseline: one ``tokenizer.encode`` call per text (for checks and the benchmark)."""

    def encode(texts: list[str]) -> list[list[int]]:
        return [tokenizer.encode(text) for text in texts]

    return encode


def checked_encoder(tokenizer, encoders: list[tuple[str, Encoder]], texts: list[str], label: str) -> tuple[str, Encoder]:
    """The first of ``encoders`` that gives exactly ``tokenizer.encode``'s ids on ``texts``."""
    expected = one_at_a_time_encoder(tokenizer)(texts)
    for name, encode in encoders:
        if encode(texts) == expected:
            return name, encode
        log.warning("%s: %s gives other ids than encode(); trying the next batch encoder", label, name)
    raise TokenizerEvalError(
        f"{label}: no batch encoder gives the ids of encode() text by text "
        f"(tried {', '.join(name for name, _ in encoders)}); it cannot be evaluated in batches"
    )


# --- the evaluation ----------------------------------------------------------------------------


def evaluate_texts(
    datasets: list[EvalDataset], encode: Encoder, *, batch_size: int, clock: Callable[[], float] = time.perf_counter
) -> tuple[dict[str, TextStats], dict[str, int], float]:
    """Encode every dataset's non-empty texts; return stats per dataset, empty texts per dataset, encode seconds."""
    stats: dict[str, TextStats] = {}
    empty: dict[str, int] = {}
    seconds = 0.0
    for dataset in datasets:
        stats[dataset.name] = TextStats()
        empty[dataset.name] = 0
        for batch in read_text_batches(
            dataset.files, text_field=dataset.text_field, limit=dataset.samples, batch_size=batch_size
        ):
            texts = [text for text in batch if text and text.strip()]
            blank = sum(1 for text in batch if text and not text.strip())
            stats[dataset.name].whitespace_texts_skipped += blank
            empty[dataset.name] += len(batch) - len(texts) - blank
            if not texts:
                continue
            started = clock()
            ids = encode(texts)
            seconds += clock() - started
            stats[dataset.name].add(texts, ids)
    return stats, empty, seconds


def check_texts(datasets: list[EvalDataset], count: int = CHECK_TEXTS) -> list[str]:
    """The first ``count`` non-empty texts of each dataset, to check the batch encoder with."""
    texts: list[str] = []
    for dataset in datasets:
        for batch in read_text_batches(dataset.files, text_field=dataset.text_field, limit=count, batch_size=count):
            texts.extend(text for text in batch if text and text.strip())
    return texts


def pooled(stats: Iterable[TextStats]) -> TextStats:
    total = TextStats()
    for item in stats:
        total = total.merged(item)
    return total


def library_versions() -> dict[str, str | None]:
    return package_versions(("tokenizers", "transformers", "huggingface_hub", "pyarrow"))


def evaluate_tokenizer(
    source: TokenizerSource,
    datasets: list[EvalDataset],
    out_path: str | Path,
    *,
    batch_size: int,
    threads: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Load ``source``, encode every dataset and write the metrics (pooled and per dataset) as JSON.

    ``threads`` caps tiktoken's encoder threads (the Rust encoder follows ``RAYON_NUM_THREADS``).
    """
    if not datasets:
        raise TokenizerEvalError(f"{source.label}: no datasets to evaluate on (tokenizer_eval.datasets is empty)")
    started = clock()
    tokenizer = load_tokenizer(source)
    vocab_size = len(tokenizer.get_vocab())
    encoders = batch_encoders(tokenizer, trained_folder=source.path if source.kind == "trained" else None, threads=threads)
    encoder_name, encode = checked_encoder(tokenizer, encoders, check_texts(datasets), source.label)
    if not getattr(tokenizer, "is_fast", False):
        log.warning("%s is a slow (Python) tokenizer: transformers encodes its batches text by text", source.label)
    per_dataset, empty, encode_seconds = evaluate_texts(datasets, encode, batch_size=batch_size, clock=clock)
    total = pooled(per_dataset.values())
    if total.texts == 0:
        raise TokenizerEvalError(
            f"{source.label}: the datasets hold no non-empty text ({', '.join(dataset.name for dataset in datasets)})"
        )
    result = {
        "name": source.name,
        "kind": source.kind,
        "path": source.path,
        "revision": None if source.is_local else source.revision,
        "commit": hub_commit(source),
        "trust_remote_code": source.trust_remote_code,
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_size": vocab_size,
        "encoder": encoder_name,
        "metrics": total.metrics(vocab_size),
        "totals": {**total.totals(), "empty_texts": sum(empty.values())},
        "datasets": [  # a list, to keep the config's order
            {
                "name": dataset.name,
                "source": dataset.source,
                "files": list(dataset.files),
                "samples": dataset.samples,
                "metrics": per_dataset[dataset.name].metrics(vocab_size),
                "totals": {**per_dataset[dataset.name].totals(), "empty_texts": empty[dataset.name]},
            }
            for dataset in datasets
        ],
        "encode_seconds": round(encode_seconds, 3),
        "encode_mb_per_second": round(total.bytes / 1e6 / encode_seconds, 3) if encode_seconds > 0 else None,
        "batch_size": batch_size,
        "versions": library_versions(),
    }
    result["seconds"] = round(clock() - started, 3)
    write_json(out_path, result)
    metrics = result["metrics"]
    log.info(
        "%s: %d texts, %d tokens, fertility %.3f, vocab utilization %.1f%%, %.1f MB/s (%s)",
        source.label,
        total.texts,
        total.tokens,
        metrics["fertility"],
        100 * metrics["vocab_utilization"],
        result["encode_mb_per_second"] or math.nan,
        encoder_name,
    )
    return result
