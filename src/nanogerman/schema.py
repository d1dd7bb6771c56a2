"""``config/schema.yaml``: loading it and the defaults it declares.

:func:`nanogerman.config.validate_config` fills them into a whole config; code and tests that need a
section's defaults without one use :func:`schema_defaults`, so that defaults live only in the schema.
This module imports no other of the project's, so any module may use it.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


@functools.cache
def load_schema() -> dict:
    """The project's schema, parsed once per process: validating a config and every :func:`schema_defaults` (a
    Snakefile's parse, each cluster job's) read the same object, so read it and never change it."""
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def fill_defaults(instance: Any, schema: dict, root: dict) -> Any:
    """Fill ``default`` values from the schema into objects, recursing into arrays."""
    schema = _resolve(schema, root)
    if isinstance(instance, dict):
        for name, sub_schema in schema.get("properties", {}).items():
            sub_schema = _resolve(sub_schema, root)
            if name not in instance and "default" in sub_schema:
                instance[name] = copy.deepcopy(sub_schema["default"])
            if name in instance:
                instance[name] = fill_defaults(instance[name], sub_schema, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in instance:
                if name not in schema.get("properties", {}):
                    instance[name] = fill_defaults(instance[name], extra, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [fill_defaults(item, schema["items"], root) for item in instance]
    return instance


def schema_defaults(*path: str) -> dict:
    """The schema's defaults of the config section at ``path`` (e.g. ``"evaluation"``; ``"items"`` steps into
    a list's entries, e.g. ``"tokenizers", "items"``), as :func:`fill_defaults` fills them into an empty
    section: for code and tests that need the defaults without a whole config."""
    root = load_schema()
    schema = root
    for name in path:
        schema = _resolve(schema, root)
        schema = _resolve(schema["items"] if name == "items" else schema["properties"][name], root)
    return fill_defaults({}, schema, root)


def _resolve(schema: dict, root: dict) -> dict:
    reference = schema.get("$ref") if isinstance(schema, dict) else None
    if reference and reference.startswith("#/"):
        target: Any = root
        for part in reference[2:].split("/"):
            target = target[part]
        return target
    return schema
