"""A task's clean subset: its evaluation documents that share no n-gram with the training corpus.

With ``evaluation.contamination.clean_subsets``, every task that has a contamination result
(``results/contamination/tasks/<task>.json``, which lists the indices of its contaminated
documents) is evaluated a second time as ``<task>_clean``. :func:`write_clean_tasks` writes
that task into the evaluation's include folder as lm-eval's own mechanisms allow:

- a YAML that ``include:``\\ s the file defining the task (the local override or generated
  task in the same folder, else the installed YAML), named ``<task>_clean``, with
  ``process_docs`` replaced;
- beside it a two-line module whose ``process_docs`` calls :func:`drop_contaminated`:
  the task's own ``process_docs`` first, then, on the evaluation split only, the documents
  at the recorded indices are dropped (the indices count the documents as the contamination
  job saw them: the same split after the same ``process_docs``).

A group gets a clean version of each subtask (ids ``<subtask>:<index>`` in the result) and
``<group>_clean``, which aggregates them as the group does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from nanogerman.errors import StageError
from nanogerman.offline_tasks import write_yaml

SUFFIX = "_clean"


class CleanSubsetError(StageError):
    """A clean subset cannot be built from the recorded contamination result."""


def clean_name(task: str) -> str:
    return f"{task}{SUFFIX}"


def is_clean_subset(task: str) -> bool:
    return task.endswith(SUFFIX)


def beside_their_tasks(tasks: Sequence[str]) -> list[str]:
    """``tasks`` with each ``<task>_clean`` moved right after ``<task>`` (where both are present)."""
    present = set(tasks)
    ordered = []
    for task in tasks:
        if task.endswith(SUFFIX) and task[: -len(SUFFIX)] in present:
            continue
        ordered.append(task)
        if clean_name(task) in present:
            ordered.append(clean_name(task))
    return ordered


def _load(path: Path, **kwargs) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, **kwargs)


def _definition(name: str, include_dir: Path, key: str) -> Path | None:
    """The YAML defining task or group ``name``: one in ``include_dir`` (it takes precedence in lm-eval), else the installed one."""
    from nanogerman.suites import find_yaml

    for path in sorted(include_dir.glob("*.yaml")):
        try:
            if _load(path, resolve_func=False, recursive=False).get(key) == name:
                return path.resolve()
        except Exception:  # noqa: BLE001 (a file lm-eval cannot read defines nothing)
            continue
    return find_yaml(name, key)


def write_clean_tasks(include_dir: str | Path, results: dict[str, str | Path]) -> list[str]:
    """For each ``{task: contamination result}``, write ``<task>_clean`` into ``include_dir``; return those names.

    Call it after the folder holds the tasks' own overrides and generated tasks.
    """
    include_dir = Path(include_dir)
    names = []
    for number, (task, result) in enumerate(results.items()):
        task_yaml = _definition(task, include_dir, "task")
        if task_yaml is not None:
            _write_clean_task(include_dir, f"{number}", task, task_yaml, Path(result), subtask=None)
        elif (group_yaml := _definition(task, include_dir, "group")) is not None:
            _write_clean_group(include_dir, number, task, group_yaml, Path(result))
        else:
            raise CleanSubsetError(
                f"config error: evaluation.contamination.clean_subsets: {task!r} is not an lm-eval task or group"
            )
        names.append(clean_name(task))
    return names


def _write_clean_task(include_dir: Path, key: str, task: str, definition: Path, result: Path, *, subtask: str | None) -> None:
    config = _load(definition, resolve_func=False)
    split = config.get("test_split") or config.get("validation_split")  # the split the contamination job read
    module = f"clean_docs_{key}"
    arguments = ", ".join(repr(value) for value in (str(definition), str(result.resolve()), split, subtask))
    (include_dir / f"{module}.py").write_text(
        "from nanogerman.clean_subsets import drop_contaminated\n\n\n"
        f"def process_docs(dataset):\n    return drop_contaminated(dataset, {arguments})\n",
        encoding="utf-8",
    )
    path = include_dir / f"clean_{key}.yaml"
    write_yaml(path, {"include": str(definition), "task": clean_name(subtask or task), "tag": []})
    with open(path, "a", encoding="utf-8") as handle:  # lm-eval's !function tag, which yaml.safe_dump cannot write
        handle.write(f"process_docs: !function {module}.process_docs\n")


def _write_clean_group(include_dir: Path, number: int, group: str, definition: Path, result: Path) -> None:
    config = _load(definition, resolve_func=False)
    subtasks = config.get("task") or []
    if not all(isinstance(subtask, str) for subtask in subtasks):
        raise CleanSubsetError(
            f"evaluation.contamination.clean_subsets: group {group!r} defines subtasks inline ({definition}); "
            "only named ones are supported"
        )
    for position, subtask in enumerate(subtasks):
        subtask_yaml = _definition(subtask, include_dir, "task")
        if subtask_yaml is None:
            raise CleanSubsetError(f"evaluation.contamination.clean_subsets: subtask {subtask!r} of {group!r} is not defined")
        _write_clean_task(include_dir, f"{number}_{position}", group, subtask_yaml, result, subtask=subtask)
    clean = {**config, "group": clean_name(group), "task": [clean_name(subtask) for subtask in subtasks]}
    if "group_alias" in clean:
        clean["group_alias"] = clean_name(str(clean["group_alias"]))
    write_yaml(include_dir / f"clean_{number}.yaml", clean)


def contaminated_indices(ids: Iterable, subtask: str | None) -> set[int]:
    """The document indices among a contamination result's ids (``<index>``, or ``<subtask>:<index>`` in a group's)."""
    found = set()
    for value in ids:
        text = str(value)
        if subtask is not None:
            owner, separator, text = text.rpartition(":")
            if separator and owner != subtask:
                continue
        found.add(int(text))
    return found


def drop_contaminated(dataset, definition: str, result: str, split: str | None, subtask: str | None):
    """lm-eval's ``process_docs`` of a clean task: the task's own ``process_docs``, then, on the evaluation split,
    the documents the contamination result lists dropped (by their index among the processed documents)."""
    own = _load(Path(definition), resolve_func=True).get("process_docs")
    documents = own(dataset) if callable(own) else dataset
    if split is not None and str(getattr(dataset, "split", None)) != split:
        return documents  # few-shot examples and other splits stay whole
    try:
        record = json.loads(Path(result).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CleanSubsetError(f"{result}: unreadable contamination result ({error}); rerun rule contamination_task") from None
    dropped = contaminated_indices(record["contaminated_ids"], subtask)
    expected = record["documents"] if subtask is None else None
    if (expected is not None and len(documents) != expected) or any(index >= len(documents) for index in dropped):
        raise CleanSubsetError(
            f"{result}: recorded for {record['documents']} documents, but {subtask or record['task']} has {len(documents)}; "
            "rerun rule contamination_task for it"
        )
    if len(dropped) == len(documents):
        raise CleanSubsetError(
            f"{result}: every document of {subtask or record['task']} shares an n-gram with the training corpus, so its "
            "clean subset is empty; set evaluation.contamination.clean_subsets to false or leave the task out"
        )
    return documents.select([index for index in range(len(documents)) if index not in dropped])


def clean_rows(rows: Sequence[dict], tasks: Iterable[str]) -> list[dict]:
    """Contamination rows with a ``<task>_clean`` row after each task evaluated on its clean subset (``tasks``)."""
    evaluated = set(tasks)
    found = []
    for row in rows:
        found.append(row)
        if clean_name(row["task"]) in evaluated:
            documents = row["documents"] - row["contaminated"]
            found.append(
                {
                    **row,
                    "task": clean_name(row["task"]),
                    "documents": documents,
                    "contaminated": 0,
                    "share": 0.0 if documents else None,
                }
            )
    return found
