"""Config checks on values a schema cannot bound: nan, where results go, shards the source holds, MaxText's parser.

Called by :func:`nanogerman.config.check_references` after the schema check; each
problem is one line naming the key, like every other config error.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nanogerman.errors import StageError
from nanogerman.maxtext_values import MaxTextValueError, check_extra, check_value
from nanogerman.provenance import PROJECT_ROOT
from nanogerman.selection import all_shards


class BoundsError(StageError):
    """A config value outside what the workflow accepts."""


def check_bounds(config: dict) -> None:
    """Every check of this module, in the order a user would fix them."""
    check_no_nan(config)
    check_results_dir(config)
    check_local_shards(config)
    check_maxtext_values(config)


def _numbers(value: Any, where: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from _numbers(item, f"{where}[{position}]")
    elif isinstance(value, float):
        yield where, value


def check_no_nan(config: dict) -> None:
    """No number in the config is nan (YAML's .nan passes every schema bound: it compares false with all of them)."""
    for where, value in _numbers(config, ""):
        if math.isnan(value):
            raise BoundsError(f"config error: {where} is nan; expected a number")


def check_results_dir(config: dict) -> None:
    """results_dir is a folder of its own: not /, not the home folder, not the project itself, and writable."""
    given = config["results_dir"]
    folder = Path(given).resolve()  # the workflow takes it literally: "~" is a folder named ~
    forbidden = {
        Path("/"): "the file system's root",
        Path.home().resolve(): "your home folder",
        PROJECT_ROOT: "the project folder (its config/, rules/ and src/ would mix with outputs)",
    }
    if folder in forbidden:
        raise BoundsError(
            f"config error: results_dir is {given!r}, {forbidden[folder]}; give a folder of its own, e.g. 'results'"
        )
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not _can_create_in(existing):
        raise BoundsError(
            f"config error: results_dir is {given!r}, but {existing} is not a writable folder; choose another folder"
        )


def _can_create_in(folder: Path) -> bool:
    """Whether a folder can be made in ``folder`` (tried, then removed: os.access says yes to root even on /proc)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".nanogerman-write-check-", dir=folder))
    except OSError:
        return False
    return True


def check_local_shards(config: dict) -> None:
    """For a local corpus folder that exists, every shard named in a shard set is a file in it."""

    corpus = config["corpus"]
    if corpus["source"] != "local":
        return
    folder = Path(corpus["location"])
    if not folder.is_dir():
        return  # the corpus job says so in its own line
    pattern = corpus.get("file_pattern") or "shard_{index:05d}.parquet"
    present = {entry.name for entry in os.scandir(folder)}
    missing = [index for index in all_shards(config) if pattern.format(index=index) not in present]
    if missing:
        holds = sum(1 for name in present if name.endswith(".parquet"))
        raise BoundsError(
            f"config error: corpus.shard_sets names shard {missing[0]} ({pattern.format(index=missing[0])}), which is not in "
            f"{folder} ({holds} parquet files there; {len(missing)} named shard(s) missing); name only shards the folder holds"
        )


def check_maxtext_values(config: dict) -> None:
    """Paths and extra settings MaxText will read arrive intact (see :mod:`nanogerman.maxtext_values`)."""
    training = config.get("training")
    if not training:
        return
    try:
        check_value(
            "base_output_directory", str(Path(config["results_dir"]).resolve()), "config error: results_dir (as an absolute path)"
        )
        checkpoint_dir = training.get("checkpoint_dir")
        if checkpoint_dir:
            check_value("base_output_directory", str(checkpoint_dir), "config error: training.checkpoint_dir")
        check_extra((training.get("defaults") or {}).get("extra") or {}, "training.defaults")
        for position, entry in enumerate(training.get("runs") or []):
            check_extra(entry.get("extra") or {}, f"training.runs[{position}]")
    except MaxTextValueError as error:
        raise BoundsError(str(error)) from None
