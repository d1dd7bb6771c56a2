"""Evaluation suites and the lm-eval task definitions the evaluation stage writes for them.

- :func:`configured_tasks`: the tasks of ``evaluation.run_suites`` (names of
  ``evaluation.suites``) followed by ``evaluation.tasks``, each once, in that order.
- :func:`write_task_definitions`: for every task with local data
  (``evaluation.local_data``), an override that is the installed task on local JSON-lines
  files in the task's Hub schema (:func:`nanogerman.offline_tasks.local_override_yaml`);
  for a group (e.g. ``global_mmlu_de``) every subtask is overridden on the same files and
  the group is written as installed, so lm-eval aggregates it as it always does. The
  corrected tasks of :mod:`nanogerman.task_fixes` (``arc_de_fixed``) are written too, on
  the Hub's data or on local data.
- :func:`chance_levels`: each task's chance level, from the task itself: for a
  multiple-choice task the mean over its documents of 1 / number of choices (``acc`` and
  ``acc_norm``), 0 for ``mcc``; none for log-likelihood tasks (lambada: accuracy and
  perplexity) and for tasks that score through their own ``process_results``
  (truthfulqa_de_mc2). A group's is the size-weighted mean of its subtasks'.
- :func:`leaf_tasks`: lm-eval's task objects of tasks and groups, groups opened to their subtasks.
- :func:`item_scores`: lm-eval's per-item scores (from ``log_samples``), kept compact for
  paired comparisons between models, plus :func:`gold_bits_per_byte` for multiple-choice items.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path

from nanogerman.errors import StageError
from nanogerman.offline_tasks import local_override_yaml, local_split_files, write_yaml
from nanogerman.task_fixes import FIXED_TASKS, PROCESS_DOCS

ITEM_METRICS = ("acc", "acc_norm", "mcc")  # per-item values kept for comparisons (mcc: lm-eval's (gold, pred) pairs)


class SuiteError(StageError):
    """A suite or task cannot be set up as configured."""


def configured_tasks(section: dict) -> list[str]:
    """The tasks to run: those of ``run_suites`` (in order), then ``tasks``; each once."""
    suites = section.get("suites") or {}
    names: list[str] = []
    for position, suite in enumerate(section.get("run_suites") or []):
        if suite not in suites:
            raise SuiteError(
                f"config error: evaluation.run_suites[{position}] is {suite!r}; expected one of evaluation.suites "
                f"({', '.join(suites) or 'none defined'})"
            )
        names.extend(suites[suite])
    names.extend(section.get("tasks") or [])
    return list(dict.fromkeys(names))


def _tasks_root() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


_DEFINITION = re.compile(r"^(task|group):\s*[\"']?([A-Za-z0-9_.-]+)[\"']?\s*$", re.MULTILINE)


@functools.lru_cache(maxsize=4)
def _yaml_index(root: str) -> dict[tuple[str, str], list[Path]]:
    """{(key, name): YAML files that seem to define it}, from one pass over the ~14,000 installed task files."""
    index: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(Path(root).rglob("*.yaml")):
        for key, name in _DEFINITION.findall(path.read_text(encoding="utf-8", errors="replace")):
            index.setdefault((key, name), []).append(path)
    return index


def find_yaml(name: str, key: str = "task", root: str | Path | None = None) -> Path | None:
    """The installed lm-eval YAML whose ``key`` (task or group) is ``name``, checked with lm-eval's loader; None if none."""
    from lm_eval.tasks._yaml_loader import load_yaml

    for path in _yaml_index(str(root or _tasks_root())).get((key, name), []):
        try:
            if load_yaml(path, resolve_func=False, recursive=False).get(key) == name:
                return path.resolve()
        except Exception:  # noqa: BLE001 (a YAML lm-eval itself cannot read is not the one)
            continue
    return None


def _override(task: str, upstream: Path, folder: str | Path) -> dict:
    """The local override, with a few-shot split that exists locally (the Hub's may be called dev or val)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    override = local_override_yaml(task, upstream, folder)
    fewshot = load_yaml(upstream, resolve_func=False).get("fewshot_split")
    files = local_split_files(folder)
    if fewshot and fewshot not in files:
        override["fewshot_split"] = next(split for split in ("validation", "train", "test") if split in files)
    return override


def _write_override(include_dir: Path, name: str, data: dict, process_docs: str | None = None) -> None:
    path = include_dir / f"local_{name}.yaml"
    write_yaml(path, data)
    if process_docs:  # lm-eval's !function tag, which yaml.safe_dump cannot write
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"process_docs: !function {process_docs}\n")


def write_task_definitions(include_dir: str | Path, tasks: Sequence[str], local_data: dict | None = None) -> list[str]:
    """Write the overrides, groups and corrected tasks that ``tasks`` need into ``include_dir``; return their names."""
    include_dir = Path(include_dir)
    local_data = local_data or {}
    names = []
    for task in tasks:
        folder = local_data.get(task)
        if task in FIXED_TASKS:
            upstream = _installed(FIXED_TASKS[task], "task")
            data = _override(task, upstream, folder) if folder else {"include": str(upstream), "task": task, "tag": []}
            _write_override(include_dir, task, data, PROCESS_DOCS[task])
            names.append(task)
        elif folder is None:
            continue
        elif (group_yaml := find_yaml(task, "group")) is not None:
            names.extend(_write_group(include_dir, task, group_yaml, folder))
        else:
            _write_override(include_dir, task, _override(task, _installed(task, "task"), folder))
            names.append(task)
    return names


def _installed(name: str, key: str) -> Path:
    found = find_yaml(name, key)
    if found is None:
        raise SuiteError(f"config error: evaluation.local_data names {name!r}, which is not an installed lm-eval task")
    return found


def _write_group(include_dir: Path, group: str, group_yaml: Path, folder: str | Path) -> list[str]:
    """Every subtask of ``group`` on the local files, and the group itself as installed (its aggregation included)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    definition = load_yaml(group_yaml, resolve_func=False)
    subtasks = definition.get("task") or []
    if not all(isinstance(subtask, str) for subtask in subtasks):
        raise SuiteError(
            f"evaluation.local_data.{group}: the group defines subtasks inline ({group_yaml}); only named ones are supported"
        )
    for subtask in subtasks:
        _write_override(include_dir, subtask, _override(subtask, _installed(subtask, "task"), folder))
    write_yaml(include_dir / f"group_{group}.yaml", definition)
    return [*subtasks, group]


# --- chance levels and per-item scores -------------------------------------------------------------


def leaf_tasks(names: Sequence[str], manager) -> list:
    """lm-eval's task objects for ``names`` (loaded by the ``TaskManager`` ``manager``), each group opened to its subtasks."""
    from lm_eval.tasks import get_task_dict

    leaves: list = []

    def walk(tasks: dict) -> None:
        for value in tasks.values():
            walk(value) if isinstance(value, dict) else leaves.append(value)

    walk(get_task_dict(list(names), manager))
    return leaves


def chance_levels(results: dict, samples: dict) -> dict[str, dict[str, float | None]]:
    """{task: {metric: chance level or None}} for every task and group in lm-eval's ``results`` (see the module docstring)."""
    configs = results.get("configs") or {}
    found: dict[str, dict[str, float | None]] = {}
    for task, items in samples.items():
        config = configs.get(task) or {}
        metrics = [entry.get("metric") for entry in config.get("metric_list") or []]
        levels: dict[str, float | None] = {metric: None for metric in metrics}
        if config.get("output_type") == "multiple_choice" and not config.get("process_results") and items:
            uniform = sum(1 / len(item["arguments"]) for item in items) / len(items)
            levels.update({metric: uniform for metric in ("acc", "acc_norm") if metric in metrics})
        if "mcc" in metrics:
            levels["mcc"] = 0.0  # no correlation
        found[task] = levels
    for group, subtasks in (results.get("group_subtasks") or {}).items():
        sizes = {task: len(samples.get(task) or ()) for task in subtasks}
        total = sum(sizes.values())
        levels = {}
        for metric in ("acc", "acc_norm"):
            values = [(found.get(task) or {}).get(metric) for task in subtasks]
            if total and all(value is not None for value in values):
                levels[metric] = sum(value * sizes[task] for value, task in zip(values, subtasks, strict=False)) / total
        found[group] = levels
    return found


GOLD_BPB = "gold_bits_per_byte"  # per item: bits per UTF-8 byte the model spends on the correct answer (lower is better)


def gold_bits_per_byte(sample: dict) -> float | None:
    """Bits per byte of a multiple-choice item's correct continuation given its prompt, from lm-eval's logged sample.

    The sample's ``arguments`` are (context, continuation) per choice and its ``filtered_resps``
    (log-likelihood, is greedy) per choice; ``target`` is the gold index or the gold choice's text.
    None where that is not the shape (not multiple choice, several gold answers, mutual-information
    requests, an empty continuation). Unlike accuracy it moves with every bit of language modelling,
    so it separates models that both sit at chance; it measures the answer's text, not the task's skill.
    """
    arguments, responses, target = sample.get("arguments"), sample.get("filtered_resps"), sample.get("target")
    if not arguments or not responses or len(arguments) != len(responses) or isinstance(target, (list, tuple)):
        return None
    try:
        continuations = [str(argument[1]) for argument in arguments]
        likelihoods = [float(response[0]) for response in responses]
    except (TypeError, IndexError, ValueError):
        return None
    if isinstance(target, str):
        matches = [index for index, text in enumerate(continuations) if text.strip() == target.strip()]
        target = matches[0] if len(matches) == 1 else None
    if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < len(continuations):
        return None
    size = len(continuations[target].encode("utf-8"))
    if not size or not math.isfinite(likelihoods[target]):
        return None
    return -likelihoods[target] / math.log(2) / size


def item_scores(samples: dict) -> dict[str, dict]:
    """{task: {"doc_id": [...], metric: [...]}}: lm-eval's per-item values of :data:`ITEM_METRICS`, in doc order,
    and :data:`GOLD_BPB` where every item of the task has one."""
    kept = {}
    for task, items in samples.items():
        ordered = sorted(items, key=lambda item: item["doc_id"])
        entry: dict = {"doc_id": [item["doc_id"] for item in ordered]}
        for metric in ITEM_METRICS:
            if ordered and metric in ordered[0]:
                entry[metric] = [item[metric] for item in ordered]
        gold = [gold_bits_per_byte(item) for item in ordered]
        if gold and all(value is not None for value in gold):
            entry[GOLD_BPB] = gold
        kept[task] = entry
    return kept


# --- what the report takes from here ---------------------------------------------------------------


def recorded_chances(result_files) -> dict[str, float | None]:
    """{task: chance of acc} recorded by the evaluation stage in its lm-eval results files (the first file that has one)."""
    import json

    found: dict[str, float | None] = {}
    for path in result_files:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for task, levels in ((data.get("nanogerman") or {}).get("chance") or {}).items():
            if task not in found and ("acc" in levels or "acc_norm" in levels):
                found[task] = levels.get("acc", levels.get("acc_norm"))
    return found


ARC_FOOTNOTE = (
    "arc_de is lm-eval 0.4.13's task as published, which deletes every [...] span from questions and answers "
    "(HellaSwag's preprocessing, lm-eval issue 2000); arc_de_fixed is the same task without that step "
    "(src/nanogerman/task_fixes.py)."
)


def task_notes(tasks: Sequence[str]) -> list[str]:
    """Footnotes for the overview about the tasks in its columns (the arc note where arc_de_fixed is shown beside arc_de)."""
    return [ARC_FOOTNOTE] if "arc_de_fixed" in tasks else []
