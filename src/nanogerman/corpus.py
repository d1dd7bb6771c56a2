"""Corpus stage: fetch parquet shards from a local folder, the Hugging Face Hub or GCS.

Every shard is checked on arrival (readable parquet, a string ``text`` column, no
nulls, valid UTF-8, at least one row) and copied byte for byte, so its sha256
matches the upstream file. A manifest beside it records where it came from.
Nothing is left behind on failure: the shard is written to a temporary path and
renamed into place only once it has passed the checks.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from nanogerman.atomic import atomic_path, write_json
from nanogerman.errors import StageError, first_line
from nanogerman.gcs import gcs_filesystem, split_gcs_uri
from nanogerman.hub import HubTarget, call_hub
from nanogerman.hub import endpoint as hub_endpoint
from nanogerman.manifests import read_json_object
from nanogerman.provenance import file_sha256
from nanogerman.schema import schema_defaults
from nanogerman.text_column import TEXT_COLUMN, blank_count, parquet_text_batches

log = logging.getLogger(__name__)


class ShardError(StageError):
    """A shard is missing, unreadable or malformed."""


@dataclass(frozen=True)
class ShardSource:
    """Where the shards come from: ``corpus`` in the config."""

    kind: str  # "local", "hub" or "gcs"
    location: str  # folder, Hub dataset repo id, or gs://bucket/prefix
    revision: str  # Hub only
    file_pattern: str
    retries: int  # Hub only: attempts after the first
    backoff_seconds: float  # Hub only: first wait; doubles each retry

    @classmethod
    def from_config(cls, corpus: dict) -> ShardSource:
        """From a validated config's ``corpus`` section (every key filled in)."""
        download = corpus["download"]
        return cls(
            kind=corpus["source"],
            location=str(corpus["location"]),
            revision=str(corpus["revision"]),
            file_pattern=corpus["file_pattern"],
            retries=int(download["retries"]),
            backoff_seconds=float(download["backoff_seconds"]),
        )

    @classmethod
    def from_schema(cls, kind: str, location: str, **changes: Any) -> ShardSource:
        """``kind`` at ``location`` with the schema's defaults and ``changes`` on top (tests)."""
        return dataclasses.replace(
            cls.from_config({**schema_defaults("corpus"), "source": kind, "location": location}), **changes
        )

    def filename(self, index: int) -> str:
        return self.file_pattern.format(index=index)

    def uri(self, index: int) -> str:
        """A human-readable address of the shard, used in messages and manifests."""
        name = self.filename(index)
        if self.kind == "hub":
            return f"hf://datasets/{self.location}@{self.revision}/{name}"
        if self.kind == "gcs":
            return f"{self.location.rstrip('/')}/{name}"
        return str(Path(self.location) / name)


@dataclass(frozen=True)
class ShardStats:
    rows: int
    characters: int
    text_bytes: int
    empty_texts: int
    file_bytes: int
    sha256: str
    blank_texts: int = 0  # empty or whitespace only (empty_texts included)


def fetch_shard(
    source: ShardSource, index: int, parquet_path: str | Path, manifest_path: str | Path, *, max_empty_share: float | None = None
) -> dict:
    """Fetch shard ``index`` from ``source``, check it, and write it plus its manifest.

    Warns, naming the shard, when more than ``max_empty_share`` of its texts are
    empty or whitespace (``corpus.max_empty_share``). Returns the manifest. Raises :class:`ShardError` (one line, naming the shard)
    for anything wrong with the shard or its source.
    """
    started = time.perf_counter()
    with atomic_path(parquet_path) as temporary:
        origin = _FETCHERS[source.kind](source, index, temporary)
        stats = check_shard(temporary, label=source.uri(index))
    manifest = {
        "shard": Path(parquet_path).stem,
        "index": index,
        "file": Path(parquet_path).name,
        "source": {"kind": source.kind, "uri": source.uri(index), **origin},
        "rows": stats.rows,
        "characters": stats.characters,
        "text_bytes": stats.text_bytes,
        "empty_texts": stats.empty_texts,
        "blank_texts": stats.blank_texts,
        "bytes": stats.file_bytes,
        "sha256": stats.sha256,
    }
    write_json(manifest_path, manifest)
    if max_empty_share is not None and stats.blank_texts > max_empty_share * stats.rows:
        log.warning(
            "%s (%s): %d of %d texts (%.1f%%) are empty or whitespace, more than corpus.max_empty_share (%.1f%%); they are kept",
            manifest["shard"],
            source.uri(index),
            stats.blank_texts,
            stats.rows,
            100 * stats.blank_texts / stats.rows,
            100 * max_empty_share,
        )
    log.info(
        "%s: %d rows, %d characters, %.1f MB from %s in %.2f s",
        manifest["shard"],
        stats.rows,
        stats.characters,
        stats.file_bytes / 1e6,
        source.uri(index),
        time.perf_counter() - started,
    )
    return manifest


def check_shard(path: str | Path, label: str | None = None) -> ShardStats:
    """Check that ``path`` is a usable corpus shard and measure it.

    Reads the ``text`` column one record batch at a time, so a 250 M-character
    upstream shard never has to fit in memory at once.
    """
    path = Path(path)
    label = label or str(path)
    size = path.stat().st_size
    if size == 0:
        raise ShardError(f"{label}: the file is empty (0 bytes)")
    rows = characters = text_bytes = empty = blank = 0
    try:
        for texts in parquet_text_batches(path, column=TEXT_COLUMN, batch_size=4096, label=label, error=ShardError):
            if texts.null_count:
                first_null = rows + pc.index(pc.is_null(texts), True).as_py()
                raise ShardError(
                    f"{label}: {texts.null_count} null text(s) in column '{TEXT_COLUMN}' (first at row {first_null})"
                )
            try:
                texts.validate(full=True)
            except pa.ArrowInvalid:
                raise ShardError(f"{label}: invalid UTF-8 in column '{TEXT_COLUMN}' near row {rows}") from None
            rows += len(texts)
            characters += pc.sum(pc.utf8_length(texts)).as_py() or 0
            lengths = pc.binary_length(texts)
            text_bytes += pc.sum(lengths).as_py() or 0
            empty += pc.sum(pc.equal(lengths, 0)).as_py() or 0
            blank += blank_count(texts)
    except (pa.ArrowException, OSError) as error:
        raise ShardError(f"{label}: not a readable parquet file ({first_line(error)})") from None
    if rows == 0:
        raise ShardError(f"{label}: the shard has no rows")
    if blank == rows:
        raise ShardError(f"{label}: all {rows} texts are empty or whitespace; a shard needs text")
    return ShardStats(rows, characters, text_bytes, empty, size, file_sha256(path), blank)


# --- fetchers: copy one shard to ``destination``; return extra provenance ---------------


def _fetch_local(source: ShardSource, index: int, destination: Path) -> dict:
    folder = Path(source.location)
    if not folder.is_dir():
        raise ShardError(f"corpus.location {source.location!r} is not a folder (corpus.source is 'local')")
    origin = folder / source.filename(index)
    if not origin.is_file():
        raise ShardError(f"{origin}: shard not found (corpus.location is {source.location!r})")
    shutil.copyfile(origin, destination)
    return {}


def _fetch_gcs(source: ShardSource, index: int, destination: Path) -> dict:
    bucket, _ = split_gcs_uri(source.location)
    filesystem = gcs_filesystem()
    uri = source.uri(index)
    try:
        if not filesystem.exists(bucket):
            raise ShardError(
                f"gs://{bucket}: the bucket does not exist or is not readable (corpus.location is {source.location!r})"
            )
        if not filesystem.isfile(uri):
            raise ShardError(f"{uri}: shard not found")
        filesystem.get_file(uri, str(destination))
    except (OSError, ValueError) as error:
        raise ShardError(f"{uri}: could not download ({first_line(error)})") from None
    return {}


def _fetch_hub(source: ShardSource, index: int, destination: Path) -> dict:
    """Download through ``huggingface_hub`` (cached, resumable), retrying transient failures."""
    import huggingface_hub

    label = source.uri(index)
    target = HubTarget(
        label,
        source.location,
        source.revision,
        repo_key="corpus.location",
        revision_key="corpus.revision",
        missing_file="shard not found in the Hub repo",
    )
    cached = call_hub(
        lambda: huggingface_hub.hf_hub_download(
            repo_id=source.location,
            filename=source.filename(index),
            repo_type="dataset",
            revision=source.revision,
            endpoint=hub_endpoint(),
        ),
        target,
        retries=source.retries,
        backoff_seconds=source.backoff_seconds,
        error=ShardError,
    )
    shutil.copyfile(cached, destination)
    # hf_hub_download stores files under .../snapshots/<commit>/<filename>: record the commit.
    commit = Path(cached).parent.name if Path(cached).parent.parent.name == "snapshots" else None
    return {"revision": source.revision, "commit": commit}


_FETCHERS = {"local": _fetch_local, "hub": _fetch_hub, "gcs": _fetch_gcs}


def summarize_corpus(manifest_paths: list[str], shard_sets: dict[str, list[int]], summary_path: str | Path) -> dict:
    """Write totals (shards, rows, characters, bytes) per shard set, plus every shard's manifest."""
    manifests = {}
    for path in manifest_paths:
        manifest = read_json_object(path, "corpus shard manifest", error=ShardError)
        manifests[manifest["index"]] = manifest
    totals = {}
    for name, indices in shard_sets.items():
        chosen = [manifests[index] for index in indices]
        totals[name] = {
            "shards": len(chosen),
            **{key: sum(item[key] for item in chosen) for key in ("rows", "characters", "text_bytes", "bytes")},
        }
    summary = {"shard_sets": totals, "shards": [manifests[index] for index in sorted(manifests)]}
    write_json(summary_path, summary)
    return summary
