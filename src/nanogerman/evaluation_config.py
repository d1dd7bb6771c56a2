"""Which runs are exported and which models evaluated, from the config; the checks of ``export`` and ``evaluation``.

Used when the workflow is planned (rules/export.smk, rules/evaluate.smk, :mod:`nanogerman.config`),
without importing the evaluation itself.
"""

from __future__ import annotations

from pathlib import Path

from nanogerman.selection import ConfigError, check_shard_set_name, check_unique_names
from nanogerman.suites import SuiteError, configured_tasks


def training_run_names(config: dict) -> list[str]:
    return [entry["name"] for entry in (config.get("training") or {}).get("runs") or []]


def exported_runs(config: dict) -> list[str]:
    """``export.runs``: true for every training run, false for none, or a list of run names."""
    chosen = config["export"]["runs"]
    if isinstance(chosen, list):
        return list(chosen)
    return training_run_names(config) if chosen else []


def reference_names(config: dict) -> list[str]:
    return [entry["name"] for entry in (config.get("evaluation") or {}).get("reference_models") or []]


def evaluated_runs(config: dict) -> list[str]:
    """``evaluation.models``: true for every exported run, false for none, or a list of exported runs."""
    chosen = config["evaluation"]["models"]
    if isinstance(chosen, list):
        return list(chosen)
    return exported_runs(config) if chosen else []


def evaluated_models(config: dict) -> list[str]:
    """Reference models first, then the runs: the order of the seed's table. Empty without an evaluation section."""
    if not config.get("evaluation"):
        return []
    return reference_names(config) + evaluated_runs(config)


def check_export_evaluation(config: dict) -> None:
    """Names in ``export`` and ``evaluation`` that point at runs, shard sets and folders; one-line errors."""
    runs = training_run_names(config)
    export = config["export"]
    chosen = export["runs"]
    for position, name in enumerate(chosen if isinstance(chosen, list) else []):
        if name not in runs:
            raise ConfigError(
                f"config error: export.runs[{position}] is {name!r}; expected the name of a training run ({', '.join(runs) or 'none defined'})"
            )
    exported = exported_runs(config)
    for key in ("checkpoint_step", "publish"):
        for name in export.get(key) or {}:
            if name not in exported:
                raise ConfigError(
                    f"config error: export.{key} names {name!r}, which is not an exported run ({', '.join(exported) or 'none'})"
                )
    section = config.get("evaluation") or {}
    if not section:
        return
    models = section["models"]
    for position, name in enumerate(models if isinstance(models, list) else []):
        if name not in exported:
            raise ConfigError(
                f"config error: evaluation.models[{position}] is {name!r}; expected an exported run ({', '.join(exported) or 'none'})"
            )
    references = section.get("reference_models") or []
    check_unique_names(references, "evaluation.reference_models")
    if "tasks" in [entry["name"] for entry in references] + exported:
        raise ConfigError(
            "config error: a model is named 'tasks', which results/eval/tasks/ (the generated tasks) uses; rename it"
        )
    for position, entry in enumerate(references):
        if entry["name"] in runs:
            raise ConfigError(
                f"config error: evaluation.reference_models[{position}].name {entry['name']!r} is also a training run's name; "
                "every evaluated model needs its own name"
            )
    try:
        tasks = configured_tasks(section)
    except SuiteError as error:
        raise ConfigError(str(error)) from None
    for task, folder in (section.get("local_data") or {}).items():
        if task not in tasks:
            raise ConfigError(
                f"config error: evaluation.local_data names {task!r}, which is not in evaluation.tasks "
                "or a suite of evaluation.run_suites"
            )
        if not Path(folder).is_dir():
            raise ConfigError(f"config error: evaluation.local_data.{task} is {folder!r}; no such folder")
    for key in ("bits_per_byte", "next_passage"):
        part = section[key]
        if part["enabled"] and "shards" in part:
            check_shard_set_name(config, part["shards"], f"evaluation.{key}.shards")
