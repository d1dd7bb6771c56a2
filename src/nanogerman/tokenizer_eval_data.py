"""The tokenizer evaluation's texts: reading text files in batches, and the evaluation datasets (local or from the Hub).

Texts come from parquet (through :mod:`nanogerman.text_column`), JSON lines or plain text
files; a Hub dataset is fetched once per commit into ``<name>.parquet`` with a manifest.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nanogerman.atomic import atomic_path, write_json
from nanogerman.errors import StageError
from nanogerman.hub import HubTarget, call_hub
from nanogerman.hub import endpoint as hub_endpoint
from nanogerman.text_column import TEXT_COLUMN, parquet_text_batches

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".parquet", ".jsonl", ".txt")
# Files of a Hub dataset repo that hold texts, and the split names the Hub recognises in paths.
HUB_DATA_SUFFIXES = (".parquet", ".jsonl")
HUB_SPLIT_NAMES = ("train", "validation", "valid", "dev", "test", "eval")


class TokenizerEvalError(StageError):
    """A tokenizer or an evaluation dataset cannot be used as configured."""


# --- reading texts -----------------------------------------------------------------------------


def read_text_batches(
    files: Iterable[str | Path], *, text_field: str = TEXT_COLUMN, limit: int | None = None, batch_size: int = 1000
) -> Iterator[list[str]]:
    """The texts of ``files`` in order, in lists of at most ``batch_size``; nulls become "".

    ``limit`` caps the records read (empty ones included), across files. Formats by
    suffix: ``.parquet`` (the string column ``text_field``), ``.jsonl`` (one JSON object
    per line with the key ``text_field``) and ``.txt`` (one text per line).
    """
    remaining = limit
    for path in files:
        path = Path(path)
        readers = {".parquet": _parquet_batches, ".jsonl": _jsonl_batches, ".txt": _txt_batches}
        reader = readers.get(path.suffix)
        if reader is None:
            raise TokenizerEvalError(
                f"{path}: cannot read texts from a {path.suffix or 'suffix-less'} file; "
                f"expected one of {', '.join(TEXT_SUFFIXES)}"
            )
        if not path.is_file():
            raise TokenizerEvalError(f"{path}: file not found")
        for batch in reader(path, text_field, batch_size):
            if remaining is not None:
                batch = batch[:remaining]
                remaining -= len(batch)
            if batch:
                yield batch
            if remaining == 0:
                return


def _parquet_batches(path: Path, text_field: str, batch_size: int) -> Iterator[list[str]]:
    texts = parquet_text_batches(
        path, column=text_field, batch_size=batch_size, hint="; set text_field to the text column", error=TokenizerEvalError
    )
    for batch in texts:
        yield [text or "" for text in batch.to_pylist()]


def _jsonl_batches(path: Path, text_field: str, batch_size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for number, line in _numbered_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise TokenizerEvalError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict) or text_field not in record:
            raise TokenizerEvalError(f"{path}:{number}: expected a JSON object with the key {text_field!r} (text_field)")
        text = record[text_field]
        if text is not None and not isinstance(text, str):
            raise TokenizerEvalError(f"{path}:{number}: {text_field!r} is a {type(text).__name__}; expected a string")
        batch.append(text or "")
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _txt_batches(path: Path, text_field: str, batch_size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for _, line in _numbered_lines(path):
        batch.append(line)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Lines split at "\\n" (a "\\r" before it dropped), numbered from 1; invalid UTF-8 is a one-line error."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8")
            except UnicodeDecodeError:
                raise TokenizerEvalError(f"{path}:{number}: not valid UTF-8") from None


# --- datasets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalDataset:
    """One dataset as the evaluation job reads it: local files, a text field and a cap."""

    name: str
    files: tuple[str, ...]
    text_field: str = TEXT_COLUMN
    samples: int | None = None
    source: dict = field(default_factory=dict)  # what the config says, for the record

    @classmethod
    def from_params(cls, params: dict) -> EvalDataset:
        return cls(
            name=params["name"],
            files=tuple(str(path) for path in params["files"]),
            text_field=params.get("text_field", TEXT_COLUMN),
            samples=params.get("samples"),
            source=dict(params.get("source") or {}),
        )


def hub_split_files(paths: Iterable[str], split: str) -> list[str]:
    """The data files of a Hub dataset repo that belong to ``split``, sorted.

    A file belongs to the split when a folder or the file name is the split's name or
    starts with it followed by ``-``, ``_``, ``.`` or a digit (``train.jsonl``,
    ``data/train-00000-of-00002.parquet``, ``train/0000.parquet``). A repo whose files
    name no split at all is one ``train`` split, as the ``datasets`` library reads it.
    """
    data = sorted(path for path in paths if path.endswith(HUB_DATA_SUFFIXES) and not path.startswith("."))

    def names(path: str, name: str) -> bool:
        pattern = re.compile(rf"^{re.escape(name)}([-_.0-9].*)?$")
        return any(pattern.match(part) for part in path.split("/"))

    chosen = [path for path in data if names(path, split)]
    if not chosen and split == "train" and not any(names(path, other) for path in data for other in HUB_SPLIT_NAMES):
        chosen = data
    return chosen


@dataclass(frozen=True)
class HubDataset:
    """A dataset entry with ``hub:``: the first ``samples`` texts of a split of a Hub dataset repo."""

    name: str
    repo: str
    revision: str = "main"
    split: str = "train"
    text_field: str = TEXT_COLUMN
    samples: int | None = None

    @classmethod
    def from_config(cls, entry: dict) -> HubDataset:
        return cls(
            name=entry["name"],
            repo=entry["hub"],
            revision=entry.get("revision", "main"),
            split=entry.get("split", "train"),
            text_field=entry.get("text_field", TEXT_COLUMN),
            samples=entry.get("samples"),
        )

    @property
    def label(self) -> str:
        return f"tokenizer_eval dataset {self.name!r} (hf://datasets/{self.repo}@{self.revision}, split {self.split!r})"


def fetch_hub_dataset(
    spec: HubDataset, parquet_path: str | Path, manifest_path: str | Path, *, retries: int = 5, backoff_seconds: float = 2.0
) -> dict:
    """Download the split's files (until ``samples`` texts) and write their texts as one parquet file.

    The output has one string column ``text`` holding the first ``samples`` records of the
    split in file order (empty ones kept; the evaluation skips them). The manifest records
    the commit read, the files and the counts. Transient failures are retried.
    """
    import huggingface_hub

    endpoint = hub_endpoint()  # read now, so a mirror or test stand-in set later counts
    target = HubTarget(
        spec.label,
        spec.repo,
        spec.revision,
        repo_key="the hub key",
        revision_key="the revision key",
        missing_file="a data file vanished from the repo while reading it; run again",
    )

    def hub_call(attempt: Callable[[], Any]) -> Any:
        return call_hub(attempt, target, retries=retries, backoff_seconds=backoff_seconds, error=TokenizerEvalError)

    api = huggingface_hub.HfApi(endpoint=endpoint)
    info = hub_call(lambda: api.dataset_info(spec.repo, revision=spec.revision))
    available = [sibling.rfilename for sibling in info.siblings or []]
    files = hub_split_files(available, spec.split)
    if not files:
        data = [path for path in available if path.endswith(HUB_DATA_SUFFIXES)]
        raise TokenizerEvalError(
            f"{spec.label}: no {'/'.join(HUB_DATA_SUFFIXES)} files for split {spec.split!r} "
            f"(data files: {', '.join(data[:8]) or 'none'}); check the split key"
        )
    rows = empty = 0
    used: list[str] = []
    schema = pa.schema([(TEXT_COLUMN, pa.string())])
    with atomic_path(parquet_path) as temporary:
        with pq.ParquetWriter(temporary, schema) as writer:
            for filename in files:
                remaining = None if spec.samples is None else spec.samples - rows
                if remaining == 0:
                    break
                cached = hub_call(
                    lambda filename=filename: huggingface_hub.hf_hub_download(
                        repo_id=spec.repo,
                        filename=filename,
                        repo_type="dataset",
                        revision=info.sha,
                        endpoint=endpoint,
                    )
                )
                used.append(filename)
                # hf_hub_download keeps the repo's file name; read it by that suffix.
                for batch in read_text_batches([cached], text_field=spec.text_field, limit=remaining, batch_size=4096):
                    writer.write_table(pa.table({TEXT_COLUMN: pa.array(batch, pa.string())}, schema=schema))
                    rows += len(batch)
                    empty += sum(1 for text in batch if not text)
        if rows == empty:
            raise TokenizerEvalError(f"{spec.label}: the split holds no text in the field {spec.text_field!r}")
    manifest = {
        "name": spec.name,
        "source": {
            "kind": "hub",
            "repo": spec.repo,
            "revision": spec.revision,
            "commit": info.sha,
            "split": spec.split,
            "text_field": spec.text_field,
            "samples": spec.samples,
        },
        "files": used,
        "rows": rows,
        "empty_texts": empty,
    }
    write_json(manifest_path, manifest)
    log.info("%s: %d texts (%d empty) from %d file(s) at commit %s", spec.label, rows, empty, len(used), info.sha)
    return manifest
