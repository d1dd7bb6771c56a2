"""Typed readers of the stage manifests other stages read, with one wording for a bad one.

- :func:`read_train_manifest`: a training run's ``results/train/<run>/train.json``
  (:func:`nanogerman.training.build_manifest`);
- :func:`read_dataset_manifest`: the dataset stage's ``results/dataset/dataset.json`` (and its
  ``build.json``, the same shape before publishing);
- :func:`read_tokenizer_stats`: a tokenizer folder's ``stats.json`` (the tokenizer stage's
  :func:`nanogerman.tokenizer_training.train_tokenizer`).

A file that is missing or not a JSON object fails with
``<path>: unreadable <what> (missing or not valid JSON: <reason>); rerun the job that writes it (snakemake --cores all --force <path>)``,
and a key a reader needs that the file lacks with
``<path>: the <what> has no '<key>'; rerun the job that writes it (…)``. The error's class is
the caller's (``error=``), so each stage keeps its own one-line error type. Other stage
files read as one JSON object (a corpus shard's manifest, a dataset part's ``part.json``, a
generated task's ``task.json``) go through :func:`read_json_object`, with the same wording.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from nanogerman.errors import StageError, first_line


class ManifestError(StageError):
    """A stage manifest is missing, not valid JSON, or lacks a key its reader needs."""


def rerun_hint(path: str | Path) -> str:
    return f"rerun the job that writes it (snakemake --cores all --force {path})"


def read_json_object(path: str | Path, what: str, *, error: type[StageError] = ManifestError) -> dict:
    """The JSON object in ``path``; ``error`` with the one wording if the file is missing, unreadable or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as caught:
        reason = "no such file" if isinstance(caught, FileNotFoundError) else first_line(caught)
        raise error(f"{path}: unreadable {what} (missing or not valid JSON: {reason}); {rerun_hint(path)}") from None
    if not isinstance(data, dict):
        raise error(
            f"{path}: unreadable {what} (missing or not valid JSON: a {type(data).__name__}, not an object); {rerun_hint(path)}"
        )
    return data


@dataclass(frozen=True)
class Manifest:
    """A manifest's path and its JSON object; ``manifest[key]`` names the file and the fix when the key is missing."""

    what: ClassVar[str] = "manifest"

    path: Path
    data: dict
    error: type[StageError] = field(default=ManifestError, compare=False, repr=False)

    def __getitem__(self, key: str) -> Any:
        if key not in self.data:
            raise self.error(f"{self.path}: the {self.what} has no {key!r}; {rerun_hint(self.path)}")
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def require(self, *keys: str) -> None:
        """Fail on the first of ``keys`` the manifest lacks."""
        for key in keys:
            self[key]

    def invalid(self, key: str, expected: str) -> StageError:
        """The error for a key whose value is not what a reader expects."""
        return self.error(
            f"{self.path}: {key} is {self.data.get(key)!r} in the {self.what}; expected {expected}; {rerun_hint(self.path)}"
        )


@dataclass(frozen=True)
class TrainManifest(Manifest):
    what: ClassVar[str] = "training manifest"

    @property
    def run(self) -> str:
        return str(self["run"])

    @property
    def accelerator(self) -> str | None:
        return self.get("accelerator")


@dataclass(frozen=True)
class DatasetManifest(Manifest):
    """Checked on reading: ``maxtext``, the MaxText data options every reader passes on."""

    what: ClassVar[str] = "dataset manifest"

    def __post_init__(self) -> None:
        self.maxtext  # noqa: B018 (raises the one-line error)

    @property
    def maxtext(self) -> dict:
        """The MaxText data options the training stage passes on (``dataset_type``, paths, …)."""
        options = self["maxtext"]
        if not isinstance(options, dict):
            raise self.invalid("maxtext", "an object of MaxText data options")
        return options


@dataclass(frozen=True)
class TokenizerStats(Manifest):
    """Checked on reading: ``vocab_size``, which sizes the model."""

    what: ClassVar[str] = "tokenizer stats"

    def __post_init__(self) -> None:
        self.vocab_size  # noqa: B018 (raises the one-line error)

    @property
    def vocab_size(self) -> int:
        size = self["vocab_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise self.invalid("vocab_size", "an integer >= 1")
        return size


def read_train_manifest(path: str | Path, *, error: type[StageError] = ManifestError) -> TrainManifest:
    return TrainManifest(Path(path), read_json_object(path, TrainManifest.what, error=error), error)


def read_dataset_manifest(path: str | Path, *, error: type[StageError] = ManifestError) -> DatasetManifest:
    return DatasetManifest(Path(path), read_json_object(path, DatasetManifest.what, error=error), error)


def read_tokenizer_stats(tokenizer_dir: str | Path, *, error: type[StageError] = ManifestError) -> TokenizerStats:
    """``<tokenizer_dir>/stats.json``."""
    path = Path(tokenizer_dir) / "stats.json"
    return TokenizerStats(path, read_json_object(path, TokenizerStats.what, error=error), error)
