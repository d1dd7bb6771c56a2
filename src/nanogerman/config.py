"""Loading and validating the workflow configuration.

The config is checked against ``config/schema.yaml`` (JSON Schema, draft 2020-12)
before any job runs. Every problem is reported as one line that names the key,
the bad value and what is expected, e.g.::

    config error: corpus.source is 'ftp'; expected one of 'local', 'hub', 'gcs'

Defaults declared in the schema are filled in, so rules can index the config
directly; ``dataset.format: auto`` becomes the format it stands for
(:func:`nanogerman.preemption.resolve_dataset_format`). Checks that a schema cannot express (names that refer to other
sections) live in :func:`check_references`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

import jsonschema

from nanogerman.bounds import BoundsError, check_bounds
from nanogerman.evaluation_config import check_export_evaluation
from nanogerman.preemption import resolve_dataset_format
from nanogerman.schema import fill_defaults, load_schema
from nanogerman.selection import (  # noqa: F401 (re-exported: the Snakefile and scripts select through config)
    ConfigError,
    all_shards,
    check_shard_set_name,
    check_unique_names,
    parse_shards,
    shard_name,
    shard_set,
    tokenizer_entry,
)
from nanogerman.tokenizer_training import TokenizerError, check_vocab_size
from nanogerman.training import TrainingError, check_training


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of ``config`` with schema defaults filled in.

    Raises :class:`ConfigError` with a one-line message for the first problem found
    (the most specific one, by :func:`jsonschema.exceptions.best_match`).
    """
    schema = load_schema() if schema is None else schema
    if not isinstance(config, dict) or not config:
        raise ConfigError("config error: the config is empty; pass one with --configfile (see config/README.md)")
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(describe_error(error))
    filled = resolve_dataset_format(fill_defaults(copy.deepcopy(config), schema, schema))
    check_references(filled)
    return canonical(filled)


def canonical(value: Any) -> Any:
    """``value`` with every mapping's keys in sorted order (lists keep theirs).

    Snakemake compares a job's params by their text, and a dict's text follows its key
    order: without this, the same settings written in another order (or a default filled
    in) would count as a change and rerun the job and everything after it.
    """
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def key_path(parts: Iterable[Any]) -> str:
    """Render a JSON path like ``tokenizers[0].vocab_size``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def describe_error(error: jsonschema.ValidationError) -> str:
    """Turn a jsonschema error into one line: key, bad value, expectation."""
    where = key_path(error.absolute_path)
    value = error.instance
    expected = _nearest_description(error)
    kind = error.validator
    if error.parent is not None and error.parent.validator == "propertyNames" or kind == "propertyNames":
        return f"config error: {where} has the name {value!r}; expected {expected}"
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        name = unknown[0] if unknown else "?"
        full = f"{where}.{name}" if where != "(top level)" else name
        message = f"unknown key {full}"
        if allowed:
            message += f"; allowed keys here: {', '.join(allowed)}"
        return "config error: " + message + _hint(name, allowed)
    if kind == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        name = missing[0] if missing else error.message
        full = f"{where}.{name}" if where != "(top level)" else name
        sub_schema = error.schema.get("properties", {}).get(name, {})
        need = sub_schema.get("description", "")
        return f"config error: missing key {full}" + (f"; expected {need}" if need else "")
    if kind == "enum":
        options = ", ".join(repr(option) for option in error.validator_value)
        return f"config error: {where} is {value!r}; expected one of {options}"
    if kind == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        message = f"config error: {where} is {value!r} ({type(value).__name__}); expected {wanted}"
    elif kind in ("pattern", "oneOf", "anyOf", "const", "propertyNames", "minProperties", "minItems") and expected:
        # jsonschema's own text here is a regex or a list of sub-schemas: the description says it better.
        return f"config error: {where} is {value!r}; expected {expected}"
    else:
        message = f"config error: {where} is {value!r}: {error.message}"
    if expected:
        message += f" (expected {expected})"
    return message


def _nearest_description(error: jsonschema.ValidationError) -> str | None:
    """The description of the failing schema, or of the closest enclosing one (oneOf branches have none)."""
    while error is not None:
        if isinstance(error.schema, dict) and error.schema.get("description"):
            return error.schema["description"]
        error = error.parent
    return None


def _hint(name: str, allowed: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, allowed, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check_references(config: dict) -> None:
    """Check what a schema cannot: names that point into other sections.

    Each stage that refers to a shard set, a tokenizer or a run by name adds its
    check here, so a typo fails before any job runs.
    """
    for name in config["corpus"]["shard_sets"]:
        shard_set(config, name)
    _check_dataset_splits(config)
    _check_tokenizers(config)
    _check_tokenizer_eval(config)
    _check_training(config)
    _check_export_evaluation(config)
    _check_bounds(config)


def _check_dataset_splits(config: dict) -> None:
    """dataset.train_shards and dataset.validation_shards name shard sets that share no shard."""
    dataset = config.get("dataset")
    if not dataset:
        return
    train, validation = dataset["train_shards"], dataset["validation_shards"]
    check_shard_set_name(config, train, "dataset.train_shards")
    check_shard_set_name(config, validation, "dataset.validation_shards")
    shared = sorted(set(shard_set(config, train)) & set(shard_set(config, validation)))
    if shared:
        listed = ", ".join(str(index) for index in shared[:5]) + (", …" if len(shared) > 5 else "")
        raise ConfigError(
            f"config error: dataset.train_shards ({train!r}) and dataset.validation_shards ({validation!r}) share "
            f"shard(s) {listed}; the train and validation splits must be disjoint"
        )


def _check_tokenizers(config: dict) -> None:
    """Tokenizer names are unique, their shard sets exist and their vocabularies hold bytes and specials."""
    entries = config.get("tokenizers") or []
    check_unique_names(entries, "tokenizers")
    for position, entry in enumerate(entries):
        check_shard_set_name(config, entry["shards"], f"tokenizers[{position}].shards")
        try:
            check_vocab_size(entry["vocab_size"], entry["special_tokens"], f"tokenizers[{position}].vocab_size")
        except TokenizerError as error:
            raise ConfigError(str(error)) from None


def _check_tokenizer_eval(config: dict) -> None:
    """tokenizer_eval: unique dataset names, existing shard sets, known trained tokenizers, no name used twice."""
    section = config.get("tokenizer_eval") or {}
    datasets = section.get("datasets") or []
    check_unique_names(datasets, "tokenizer_eval.datasets")
    for position, entry in enumerate(datasets):
        if "shards" in entry:
            check_shard_set_name(config, entry["shards"], f"tokenizer_eval.datasets[{position}].shards")
    trained = [entry["name"] for entry in config.get("tokenizers") or []]
    chosen = section.get("trained", True)
    for position, name in enumerate(chosen if isinstance(chosen, list) else []):
        if name not in trained:
            raise ConfigError(
                f"config error: tokenizer_eval.trained[{position}] is {name!r}; expected the name of an entry of "
                f"tokenizers ({', '.join(trained) or 'none defined'})"
            )
    references = section.get("references") or []
    check_unique_names(references, "tokenizer_eval.references")
    evaluated = set(chosen if isinstance(chosen, list) else trained if chosen else [])
    for position, entry in enumerate(references):
        if entry["name"] in evaluated:
            raise ConfigError(
                f"config error: tokenizer_eval.references[{position}].name {entry['name']!r} is also a trained "
                "tokenizer's name; every evaluated tokenizer needs its own name"
            )


def _check_training(config: dict) -> None:
    """training.runs name known tokenizers, existing model files and a batch that divides over the devices."""
    try:
        check_training(config)
    except TrainingError as error:
        raise ConfigError(str(error)) from None


def _check_bounds(config: dict) -> None:
    """nan, results_dir, local shards present, values MaxText's parser reads intact (nanogerman.bounds)."""
    try:
        check_bounds(config)
    except BoundsError as error:
        raise ConfigError(str(error)) from None


def _check_export_evaluation(config: dict) -> None:
    """export and evaluation name training runs, exported runs, shard sets and existing local data folders."""
    check_export_evaluation(config)
