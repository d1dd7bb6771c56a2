"""Evaluation suites: the config, every suite task on its local fixtures, rendering as the installed task defines it,
the arc_de preprocessing bug and arc_de_fixed, chance levels from the tasks themselves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import pytest
import yaml

from nanogerman.config import ConfigError, validate_config
from nanogerman.suites import configured_tasks, find_yaml, write_task_definitions
from nanogerman.task_fixes import FIXED_TASKS

REPO = Path(__file__).resolve().parents[1]
TASK_DATA = REPO / "tests" / "data" / "tasks"
SCHEMA_SUITES = yaml.safe_load((REPO / "config" / "schema.yaml").read_text(encoding="utf-8"))["properties"]["evaluation"][
    "properties"
]["suites"]["default"]
ALL_TASKS = list(dict.fromkeys(task for tasks in SCHEMA_SUITES.values() for task in tasks))
TASKS_WITH_FIXED = [*ALL_TASKS, *FIXED_TASKS]


def fixture_folder(task: str) -> Path:
    """The fixture folder of a suite task (truthfulqa's two tasks share one data set, as on the Hub; arc_de has its own)."""
    special = {
        "arc_de": REPO / "tests" / "data" / "m_arc_de",
        "arc_de_fixed": REPO / "tests" / "data" / "m_arc_de",
        "truthfulqa_de_mc1": TASK_DATA / "truthfulqa_de",
        "truthfulqa_de_mc2": TASK_DATA / "truthfulqa_de",
    }
    return special.get(task, TASK_DATA / task)


LOCAL_DATA = {task: str(fixture_folder(task)) for task in TASKS_WITH_FIXED}


def rows(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


# --- the config ---------------------------------------------------------------------------------------


def test_suites_resolve_in_order_and_unknown_ones_are_one_line(base_config):
    section = {"suites": {"a": ["x", "y"], "b": ["y", "z"]}, "run_suites": ["a", "b"], "tasks": ["z", "w"]}
    assert configured_tasks(section) == ["x", "y", "z", "w"]
    config = dict(base_config, evaluation={"run_suites": ["seed", "nope"]})
    with pytest.raises(
        ConfigError,
        match=r"^config error: evaluation.run_suites\[1\] is 'nope'; expected one of evaluation.suites "
        r"\(seed, small_model, knowledge, large_model\)$",
    ):
        validate_config(config)


def test_the_seed_config_runs_the_seed_and_small_model_suites():
    config = validate_config(yaml.safe_load((REPO / "config" / "nano-german.yaml").read_text(encoding="utf-8")))
    section = config["evaluation"]
    assert section["run_suites"] == ["seed", "small_model"]
    tasks = configured_tasks(section)
    assert tasks[:5] == ["arc_de", "hellaswag_de", "m_mmlu_de", "truthfulqa_de_mc1", "truthfulqa_de_mc2"]
    assert set(SCHEMA_SUITES["small_model"]) <= set(tasks) and "arc_de_fixed" in tasks


# --- fixtures and rendering ------------------------------------------------------------------------------


def test_every_suite_task_has_fixtures_and_an_installed_definition():
    for task in TASKS_WITH_FIXED:
        folder = fixture_folder(task)
        assert any((folder / f"{split}.jsonl").is_file() for split in ("train", "validation", "test")), task
        upstream = FIXED_TASKS.get(task, task)
        assert find_yaml(upstream, "task") or find_yaml(upstream, "group"), task


@pytest.fixture(scope="module")
def task_objects(tmp_path_factory):
    """lm-eval's task objects of every suite task on the fixtures, as the evaluation stage defines them."""
    from lm_eval.tasks import TaskManager

    from nanogerman.suites import leaf_tasks

    include = tmp_path_factory.mktemp("include")
    write_task_definitions(include, TASKS_WITH_FIXED, LOCAL_DATA)
    leaves = leaf_tasks(TASKS_WITH_FIXED, TaskManager(include_path=str(include), include_defaults=False))
    return {leaf.config.task: leaf for leaf in leaves}


def _strict(template, doc: dict):
    """An installed task's doc_to_text / doc_to_choice on a processed document: a column, a literal list or a Jinja template.

    Jinja runs with StrictUndefined, so a field missing from the fixture's schema fails here.
    """
    if isinstance(template, list):
        return template
    if template in doc:
        return doc[template]
    rendered = (
        jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(template).render(**doc)
    )
    return eval(rendered) if isinstance(rendered, str) and rendered.startswith("[") else rendered


def test_one_example_per_task_renders_as_the_installed_task_defines_it(task_objects):
    from datasets import Dataset
    from lm_eval.tasks._yaml_loader import load_yaml

    subtasks = {task for task in ALL_TASKS if find_yaml(task, "group")}
    expected_names = set(TASKS_WITH_FIXED) - subtasks
    assert expected_names <= set(task_objects)
    for name, task in task_objects.items():
        upstream = load_yaml(find_yaml(FIXED_TASKS.get(name, name), "task"), resolve_func=True)
        split = "test" if task.has_test_docs() else "validation"
        raw = Dataset.from_list(rows(Path(task.config.dataset_kwargs["data_files"][split]).parent, split))
        process = upstream.get("process_docs")
        if name in FIXED_TASKS:
            process = None  # checked against the raw data in the arc test below
        docs = process(raw) if process else raw
        ours = next(iter(task.test_docs() if task.has_test_docs() else task.validation_docs()))
        if name not in FIXED_TASKS:
            doc = docs[0]
            assert task.doc_to_text(ours) == _strict(upstream["doc_to_text"], doc), name
            if upstream["output_type"] == "multiple_choice":
                assert task.doc_to_choice(ours) == _strict(upstream["doc_to_choice"], doc), name
            else:
                assert task.doc_to_target(ours) == _strict(upstream["doc_to_target"], doc), name
        text = task.doc_to_text(ours)
        assert isinstance(text, str) and (text or name in ("xnli_de", "paws_de")), name  # these two put everything in the choices
        if upstream["output_type"] == "multiple_choice":
            assert len(task.doc_to_choice(ours)) >= 2 and all(choice.strip() for choice in task.doc_to_choice(ours)), name


def test_arc_de_deletes_bracketed_text_and_arc_de_fixed_keeps_it(tmp_path):
    """lm-eval issue 2000: the multilingual ARC tasks run HellaSwag's preprocessing (0.4.13 still does)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    folder = tmp_path / "m_arc"
    folder.mkdir()
    item = {
        "id": "x",
        "instruction": "Wie groß ist die Stromstärke I [A], wenn U = 6 V und R = 3 Ω?",
        "option_a": "2 [A]",
        "option_b": "18 [A]",
        "option_c": "0,5 [A]",
        "option_d": "9 [A]",
        "option_e": None,
        "answer": "A",
    }
    (folder / "test.jsonl").write_text(json.dumps(item, ensure_ascii=False) + "\n", encoding="utf-8")
    include = tmp_path / "include"
    include.mkdir()
    write_task_definitions(include, ["arc_de", "arc_de_fixed"], {"arc_de": str(folder), "arc_de_fixed": str(folder)})
    tasks = get_task_dict(["arc_de", "arc_de_fixed"], TaskManager(include_path=str(include), include_defaults=False))
    broken, fixed = (next(iter(tasks[name].test_docs())) for name in ("arc_de", "arc_de_fixed"))
    assert "[A]" not in broken["query"] and broken["choices"][0] == "2 "  # the unit is gone
    assert fixed["query"] == "Question: " + item["instruction"] + "\nAnswer:"
    assert fixed["choices"] == ["2 [A]", "18 [A]", "0,5 [A]", "9 [A]"] and fixed["gold"] == broken["gold"] == 0
    assert tasks["arc_de_fixed"].config.doc_to_text == tasks["arc_de"].config.doc_to_text == "query"
    installed = find_yaml("arc_de", "task").parent / "utils.py"
    assert re.search(
        r"re\.sub\(\"\\\\\[\.\*\?\\\\\]\"", installed.read_text(encoding="utf-8")
    )  # the bug is in the installed code


def test_the_report_takes_chance_levels_from_the_tasks_and_footnotes_arc_de(tmp_path):
    from nanogerman.contamination import contamination_section
    from nanogerman.report_data import Score
    from nanogerman.report_flags import ReportSettings
    from nanogerman.report_tables import select_columns
    from nanogerman.suites import recorded_chances, task_notes

    results = tmp_path / "lm_eval.json"
    results.write_text(
        json.dumps(
            {
                "results": {},
                "nanogerman": {"chance": {"xnli_de": {"acc": 1 / 3}, "lambada_openai_mt_de": {"acc": None, "perplexity": None}}},
            }
        )
    )
    chances = recorded_chances([results])
    assert chances == {"xnli_de": pytest.approx(1 / 3), "lambada_openai_mt_de": None}

    class Model:
        scores = {
            ("xnli_de", "acc"): Score(0.4, 0.02),
            ("lambada_openai_mt_de", "acc"): Score(0.1, 0.01),
            ("lambada_openai_mt_de", "perplexity"): Score(900.0, 40.0),
        }

    columns = select_columns([Model()], ReportSettings(chance={**chances, **ReportSettings().chance}))
    assert [(column.key, column.chance) for column in columns] == [
        ("xnli_de/acc", pytest.approx(1 / 3)),
        ("lambada_openai_mt_de/acc", None),
        ("lambada_openai_mt_de/perplexity", None),
    ]
    assert (
        "issue 2000" in task_notes(["arc_de", "arc_de_fixed"])[0] and not task_notes(["arc_de"]) and not task_notes(["xnli_de"])
    )
    contamination = tmp_path / "xnli_de.json"
    contamination.write_text(json.dumps({"task": "xnli_de", "n": 13, "documents": 8, "contaminated": 2, "share": 0.25}))
    section = contamination_section([contamination])
    assert "| | xnli_de |" in section and "| contaminated | 25.0 % (2/8) |" in section and "13-gram" in section
