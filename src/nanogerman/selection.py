"""What the config selects, by name: shard sets, tokenizer entries, and the checks that a name exists once.

A leaf module: the stage modules (training, evaluation, sample, …) import these helpers
and :class:`ConfigError` from here, never from :mod:`nanogerman.config`, which imports
the stages' own checks. So the dependencies run one way: config → stages → selection.
"""

from __future__ import annotations

import re
from typing import Any

from nanogerman.errors import StageError

MAX_SHARD_INDEX = 99_999  # shard_XXXXX: the workflow's shard names have five digits
_SHARD_SPEC = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")


class ConfigError(StageError):
    """The configuration is invalid; the message is one line naming the key."""


def parse_shards(spec: int | str | list[int], key: str = "shards") -> list[int]:
    """Parse a shard spec into sorted unique indices.

    Accepts an integer (``4``), a list of integers (``[0, 2]``) or a string of
    inclusive ranges (``"0-239"``, ``"0-3,7"``).
    """
    if isinstance(spec, bool):
        raise ConfigError(f"config error: {key} is {spec!r}; expected shard indices like 0, [0, 2] or '0-239'")
    if isinstance(spec, int):
        indices = [spec]
    elif isinstance(spec, list):
        indices = list(spec)
    elif isinstance(spec, str) and _SHARD_SPEC.match(spec):
        indices = []
        for part in spec.split(","):
            first, _, last = part.strip().partition("-")
            first_index, last_index = int(first), int(last or first)
            if last_index < first_index:
                raise ConfigError(f"config error: {key} has the range {part.strip()!r}, whose end is before its start")
            if last_index > MAX_SHARD_INDEX:  # checked before expanding: '5-3000000' would make millions of jobs
                raise ConfigError(
                    f"config error: {key} has the range {part.strip()!r}, beyond the largest shard index {MAX_SHARD_INDEX}"
                )
            indices.extend(range(first_index, last_index + 1))
    else:
        raise ConfigError(f"config error: {key} is {spec!r}; expected shard indices like 0, [0, 2] or '0-239'")
    if any(not isinstance(index, int) or isinstance(index, bool) or index < 0 for index in indices):
        raise ConfigError(f"config error: {key} is {spec!r}; shard indices must be integers >= 0")
    if any(index > MAX_SHARD_INDEX for index in indices):
        raise ConfigError(f"config error: {key} is {spec!r}; shard indices go up to {MAX_SHARD_INDEX}")
    return sorted(set(indices))


def shard_set(config: dict, name: str) -> list[int]:
    """The shard indices of the named set in ``corpus.shard_sets``."""
    sets = config["corpus"]["shard_sets"]
    if name not in sets:
        raise ConfigError(f"config error: unknown shard set {name!r}; corpus.shard_sets defines {', '.join(sorted(sets))}")
    return parse_shards(sets[name], f"corpus.shard_sets.{name}")


def all_shards(config: dict) -> list[int]:
    """Every shard index named in any shard set: what the corpus stage fetches."""
    indices: set[int] = set()
    for name in config["corpus"]["shard_sets"]:
        indices.update(shard_set(config, name))
    return sorted(indices)


def shard_name(index: int) -> str:
    """The workflow's own name for a shard, independent of the source's file pattern."""
    return f"shard_{index:05d}"


def tokenizer_entry(config: dict, name: str) -> dict:
    """The ``tokenizers`` entry called ``name``."""
    for entry in config.get("tokenizers") or []:
        if entry["name"] == name:
            return entry
    known = ", ".join(entry["name"] for entry in config.get("tokenizers") or []) or "none"
    raise ConfigError(f"config error: unknown tokenizer {name!r}; tokenizers defines {known}")


def check_shard_set_name(config: dict, name: Any, key: str) -> None:
    """Fail unless ``name`` (found at ``key``) names a set in ``corpus.shard_sets``."""
    sets = config["corpus"]["shard_sets"]
    if name not in sets:
        raise ConfigError(
            f"config error: {key} is {name!r}; expected the name of a shard set in corpus.shard_sets ({', '.join(sorted(sets))})"
        )


def check_unique_names(entries: list[dict], key: str) -> None:
    """Fail if two entries of the list at ``key`` share a ``name``."""
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        name = entry.get("name")
        if name in seen:
            raise ConfigError(f"config error: {key}[{position}].name {name!r} is used twice; names must be unique")
        seen.add(name)
