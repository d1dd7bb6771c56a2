"""<task>_clean: a task evaluated on the documents that share no n-gram with the training corpus."""

from __future__ import annotations

import json

import pytest
from conftest import REPO
from test_contamination import N, _corpus
from test_plan import planned_jobs

from nanogerman.clean_subsets import CleanSubsetError, beside_their_tasks, write_clean_tasks
from nanogerman.contamination import contamination_section, task_contamination, task_documents
from nanogerman.evaluation import build_include_dir

TASKS = REPO / "tests" / "data" / "tasks"


def _leaves(names, include_dir) -> dict[str, list[dict]]:
    """{task: its evaluation documents} for lm-eval's tasks ``names`` (groups opened) defined in ``include_dir``."""
    from lm_eval.tasks import TaskManager

    from nanogerman.suites import leaf_tasks

    leaves = leaf_tasks(names, TaskManager(include_path=str(include_dir), include_defaults=False))
    return {leaf.config.task: list(leaf.test_docs() if leaf.has_test_docs() else leaf.validation_docs()) for leaf in leaves}


def test_the_clean_subset_drops_exactly_the_planted_document(tmp_path, sample_dir):
    task = "lambada_openai_mt_de"
    local = {task: str(TASKS / task)}
    items = [json.loads(line)["text"] for line in (TASKS / task / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    result = tmp_path / "contamination" / f"{task}.json"
    task_contamination(
        task, task_documents(task, local_data=local), _corpus(tmp_path / "corpus", sample_dir, items[1]), result, n=N
    )

    include_dir = tmp_path / "include"
    names = build_include_dir(include_dir, local_data=local, tasks=[task])
    assert write_clean_tasks(include_dir, {task: result}) == [f"{task}_clean"]
    documents = _leaves([task, f"{task}_clean"], include_dir)
    whole, clean = [doc["text"] for doc in documents[task]], [doc["text"] for doc in documents[f"{task}_clean"]]
    assert names == [task] and whole == items
    assert len(clean) == len(whole) - 1 and items[1] not in clean and clean == [items[0], *items[2:]]

    section = contamination_section([result], [task, f"{task}_clean"])
    assert f"| | {task} | {task}_clean |" in section and "| 25.0 % (1/4) | 0.0 % (0/3) |" in section
    assert beside_their_tasks(["a", "b", "a_clean", "c", "b_clean"]) == ["a", "a_clean", "b", "b_clean", "c"]


def test_a_group_gets_clean_subtasks_and_an_emptied_subtask_fails_in_one_line(tmp_path):
    group = "global_mmlu_de"
    local = {group: str(TASKS / group)}
    documents = task_documents(group, local_data=local)
    include_dir = tmp_path / "include"
    build_include_dir(include_dir, local_data=local, tasks=[group])
    result = tmp_path / "group.json"
    result.write_text(json.dumps({"task": group, "documents": len(documents), "contaminated": 0, "contaminated_ids": []}))
    assert write_clean_tasks(include_dir, {group: result}) == [f"{group}_clean"]
    found = _leaves([f"{group}_clean"], include_dir)
    assert len(found) == 6 and all(name.endswith("_clean") and len(docs) == 1 for name, docs in found.items())

    first = documents[0]["id"]  # "<subtask>:0", that subtask's only document
    result.write_text(json.dumps({"task": group, "documents": len(documents), "contaminated": 1, "contaminated_ids": [first]}))
    with pytest.raises(CleanSubsetError, match=f"every document of {first.split(':')[0]} shares an n-gram"):
        _leaves([f"{group}_clean"], include_dir)


@pytest.mark.parametrize("clean", [False, True])
def test_the_evaluation_waits_for_contamination_only_with_clean_subsets(tmp_path, base_config, snakemake_run, clean):
    base_config["evaluation"]["contamination"] = {"enabled": True, "clean_subsets": clean}
    target = "results/eval/tiny_nanochat/lm_eval.json"  # results_dir's default
    result = snakemake_run(tmp_path, base_config, "-n", target)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    jobs = planned_jobs(result.stdout)
    assert jobs["eval_lm_eval"] == 1
    assert jobs.get("contamination_task", 0) == (1 if clean else 0)  # the generated next_passage_de, the one task here
    assert jobs.get("contamination_merge", 0) == (1 if clean else 0)
