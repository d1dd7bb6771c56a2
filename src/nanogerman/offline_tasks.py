"""lm-eval tasks that need no download: generated from held-out text, or upstream tasks on local data.

- :func:`next_passage_examples`: a HellaSwag-style choice from the corpus's held-out
  shards. Each example is a context (whole sentences of one document), its true
  continuation (the passage that follows it there) and three continuations of about the
  same length from other documents, in a seeded order. Written as JSON lines and an
  lm-eval YAML task (:func:`write_next_passage_task`), scored with ``acc`` (sum of the
  continuation's log-likelihood) and ``acc_norm`` (per byte, as lm-eval normalizes).
- :func:`local_override_yaml`: an lm-eval task that includes an installed task's own
  YAML (prompt, choices, metrics, ``process_docs``) and only swaps its Hub dataset for
  local JSON-lines files in the same schema, under the same task name. Put the folder
  on lm-eval's ``include_path`` (which takes precedence over the built-in tasks).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from nanogerman.atomic import atomic_path
from nanogerman.errors import StageError
from nanogerman.manifests import read_json_object
from nanogerman.schema import schema_defaults

SPLITS = ("train", "validation", "test")  # lm-eval's training_split, validation_split, test_split
_SENTENCE_END = re.compile(r"([.!?…]+[\"“”»«’')\]]*)\s+(?=[\"„“»«'(\[]?[A-ZÄÖÜ0-9])")


_ABBREVIATIONS = frozenset(
    {"bzw", "ca", "dr", "etc", "evtl", "ggf", "inkl", "nr", "prof", "str", "usw", "vgl", "zb", "abs", "bd", "s"}
)


class TaskGenerationError(StageError):
    """A task cannot be generated from the given text or files."""


@dataclass(frozen=True)
class NextPassageSpec:
    """Settings of the next-passage task (``evaluation.next_passage`` in the config; defaults: the schema's, see
    :meth:`from_schema`), and the task's fixed shape."""

    examples: int  # at most; fewer when the text has fewer passages
    seed: int
    context_chars: int  # whole sentences before the continuation, up to this many characters (at least one)
    continuation_chars: int  # each continuation: whole sentences, at least this many characters …
    task: str = "next_passage_de"
    max_continuation_factor: float = 2.0  # … and at most this many times as many (longer passages are left out)
    choices: int = 4
    candidates: int = 4  # distractors are drawn from the (choices - 1) * candidates closest in length

    @classmethod
    def from_config(cls, section: dict, task: str | None = None) -> NextPassageSpec:
        """From a validated config's ``evaluation.next_passage`` section (every key filled in)."""
        keys = ("examples", "seed", "context_chars", "continuation_chars")
        return cls(task=task or section.get("task", cls.task), **{key: section[key] for key in keys})

    @classmethod
    def from_schema(cls, **changes: Any) -> NextPassageSpec:
        """The schema's defaults, with ``changes`` on top (tests); an unknown change is a TypeError."""
        return replace(cls.from_config(schema_defaults("evaluation", "next_passage")), **changes)


def sentences(text: str) -> list[str]:
    """Split a document into sentences (paragraph breaks also end one); whitespace is normalized."""
    found = []
    for paragraph in text.split("\n"):
        paragraph = " ".join(paragraph.split())
        start = 0
        for match in _SENTENCE_END.finditer(paragraph):
            if _abbreviation(paragraph[start : match.start(1)], match.group(1)):
                continue
            found.append(paragraph[start : match.end(1)])
            start = match.end()
        if paragraph[start:].strip():
            found.append(paragraph[start:].strip())
    return [sentence for sentence in found if sentence]


def _abbreviation(before: str, punctuation: str) -> bool:
    """A period after an ordinal ("3. März"), a single letter ("z. B.") or a common abbreviation ends no sentence.

    Longer numbers ("seit 2021.") do end one.
    """
    if not punctuation.startswith(".") or punctuation.startswith(".."):
        return False
    words = before.split()
    word = words[-1].lstrip("„\"(»«'") if words else ""
    return (word.isdigit() and len(word) <= 2) or len(word) <= 1 or word.lower() in _ABBREVIATIONS


def passages(sentence_list: Sequence[str], min_chars: int) -> list[tuple[int, int]]:
    """Consecutive sentences grouped into passages of at least ``min_chars``: (first, end) index pairs.

    A short remainder at the end of the document is dropped.
    """
    spans, start, size = [], 0, 0
    for index, sentence in enumerate(sentence_list):
        size += len(sentence) + (1 if index > start else 0)
        if size >= min_chars:
            spans.append((start, index + 1))
            start, size = index + 1, 0
    return spans


def _join(sentence_list: Sequence[str], start: int, end: int) -> str:
    return " ".join(sentence_list[start:end])


def context_before(sentence_list: Sequence[str], end: int, max_chars: int) -> str:
    """The sentences right before index ``end``, as many as fit in ``max_chars`` (at least one)."""
    start = end - 1
    while start > 0 and len(_join(sentence_list, start - 1, end)) <= max_chars:
        start -= 1
    return _join(sentence_list, start, end)


def next_passage_examples(documents: Sequence[str], spec: NextPassageSpec, *, sources: Sequence[str] | None = None) -> list[dict]:
    """The examples of the task, a deterministic function of the documents and ``spec`` (its seed above all)."""
    rng = random.Random(spec.seed)
    split = [sentences(text) for text in documents]
    pool = []  # (document, passage text) of every passage
    items = []  # (document, context, true continuation)
    longest = spec.continuation_chars * spec.max_continuation_factor
    for document, sentence_list in enumerate(split):
        spans = passages(sentence_list, spec.continuation_chars)
        for position, (start, end) in enumerate(spans):
            text = _join(sentence_list, start, end)
            if len(text) > longest:
                continue
            pool.append((document, text))
            if position > 0:  # a context needs text before it in the same document
                items.append((document, context_before(sentence_list, start, spec.context_chars), text))
    needed = spec.choices - 1
    if len({document for document, _ in pool}) < 2 or not items:
        raise TaskGenerationError(
            f"task {spec.task}: the held-out text has {len(documents)} document(s) and {len(items)} usable passage(s); "
            "it needs at least two documents with two passages of continuation_chars each"
        )
    if len(items) > spec.examples:
        chosen = sorted(rng.sample(range(len(items)), spec.examples))
        items = [items[index] for index in chosen]
    examples = []
    for number, (document, context, truth) in enumerate(items):
        others = sorted((abs(len(text) - len(truth)), other, text) for other, text in pool if other != document and text != truth)
        closest = [text for _, _, text in others[: needed * spec.candidates]]
        if len(set(closest)) < needed:
            raise TaskGenerationError(f"task {spec.task}: too few passages from other documents for {spec.choices} choices")
        distractors = rng.sample(sorted(set(closest)), needed)
        label = rng.randrange(spec.choices)
        endings = distractors[:label] + [truth] + distractors[label:]
        example = {
            "id": number,
            "document": sources[document] if sources else document,
            "context": context,
            "endings": endings,
            "label": label,
        }
        examples.append(example)
    return examples


def task_yaml(task: str, data_file: str | Path, *, metadata: dict | None = None) -> dict:
    """The lm-eval task definition of a generated multiple-choice task over one JSON-lines file."""
    return {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(Path(data_file).resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "context",
        "doc_to_choice": "endings",
        "doc_to_target": "label",
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0, **(metadata or {})},
    }


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")


def write_yaml(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def write_next_passage_task(
    documents: Sequence[str],
    spec: NextPassageSpec,
    out_dir: str | Path,
    *,
    sources: Sequence[str] | None = None,
    provenance: dict | None = None,
) -> dict:
    """Write ``<task>.jsonl``, ``<task>.yaml`` and ``task.json`` (settings, counts, sha256) into ``out_dir``, atomically.

    The YAML names the JSON-lines file by its absolute path (lm-eval's ``data_files``);
    the evaluation stage writes its own copy pointing wherever the folder is then.
    """
    examples = next_passage_examples(documents, spec, sources=sources)
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True) as folder:
        data_file = folder / f"{spec.task}.jsonl"
        write_jsonl(data_file, examples)
        digest = hashlib.sha256(data_file.read_bytes()).hexdigest()
        metadata = {"seed": spec.seed, "sha256": digest}
        write_yaml(folder / f"{spec.task}.yaml", task_yaml(spec.task, out_dir / data_file.name, metadata=metadata))
        info = {
            "task": spec.task,
            "spec": asdict(spec),
            "examples": len(examples),
            "documents": len(documents),
            "chance": 1 / spec.choices,
            "sha256": digest,
            **(provenance or {}),
        }
        (folder / "task.json").write_text(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return info


def generated_task_yaml(task_dir: str | Path, include_dir: str | Path) -> Path:
    """Write the YAML of a generated task folder into ``include_dir``, pointing at the folder's data where it is now."""
    task_dir = Path(task_dir)
    info_path = task_dir / "task.json"
    info = read_json_object(info_path, "task description", error=TaskGenerationError)
    task = info["task"]
    target = Path(include_dir) / f"{task}.yaml"
    write_yaml(
        target, task_yaml(task, task_dir / f"{task}.jsonl", metadata={"seed": info["spec"]["seed"], "sha256": info["sha256"]})
    )
    return target


def local_split_files(folder: str | Path) -> dict[str, str]:
    """``<split>.jsonl`` files of a local data folder: {split: absolute path}."""
    folder = Path(folder)
    found = {split: str((folder / f"{split}.jsonl").resolve()) for split in SPLITS if (folder / f"{split}.jsonl").is_file()}
    if not found:
        raise TaskGenerationError(f"{folder}: no train.jsonl, validation.jsonl or test.jsonl for the local task data")
    return found


def local_override_yaml(task: str, upstream_yaml: str | Path, folder: str | Path) -> dict:
    """An lm-eval task named ``task`` that is the installed task (``include``) on local files instead of the Hub."""
    files = local_split_files(folder)
    return {
        "include": str(Path(upstream_yaml).resolve()),
        "task": task,
        "tag": [],  # not part of the upstream task's groups
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": files},
        "training_split": "train" if "train" in files else None,
        "validation_split": "validation" if "validation" in files else None,
        "test_split": "test" if "test" in files else None,
    }
