"""Evaluation stage: the generated next-passage task, bits per byte, lm-eval runs and local task data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from tiny_model import tiny_model

from nanogerman.config import ConfigError, validate_config
from nanogerman.evaluation import (
    BPB_TASK,
    EvalSettings,
    EvaluationError,
    ModelLoadError,
    ModelSpec,
    bits_per_byte,
    evaluate_bits_per_byte,
    evaluate_lm_eval,
    find_task_yaml,
    load_lm,
    rolling_windows,
)
from nanogerman.evaluation_config import evaluated_models
from nanogerman.evaluation_summary import summary_rows, write_summary
from nanogerman.offline_tasks import (
    NextPassageSpec,
    TaskGenerationError,
    local_override_yaml,
    next_passage_examples,
    sentences,
    write_next_passage_task,
)
from nanogerman.tokenizer_training import iter_texts

REPO = Path(__file__).resolve().parents[1]
M_ARC_DE = REPO / "tests" / "data" / "m_arc_de"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny trained run and its export (tests/tiny_model.py; built once per session)."""
    return tiny_model(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def held_out(sample_dir) -> list[str]:
    """The sample's validation shard: nine documents, one per register."""
    return list(iter_texts([sample_dir / "shard_00004.parquet"]))


# --- the generated next-passage task ------------------------------------------------------------


def test_sentences_keep_abbreviated_numbers_and_quotes():
    text = "Er kam am 3. März an, z. B. mit dem Zug. Seit 2021. „Wirklich?“ fragte sie. Ja!\nNeuer Absatz ohne Punkt"
    assert sentences(text) == [
        "Er kam am 3. März an, z. B. mit dem Zug.",
        "Seit 2021.",
        "„Wirklich?“ fragte sie.",
        "Ja!",
        "Neuer Absatz ohne Punkt",
    ]


def test_the_same_seed_gives_the_same_task(held_out, tmp_path):
    spec = NextPassageSpec.from_schema(seed=7)
    first = write_next_passage_task(held_out, spec, tmp_path / "a")
    second = write_next_passage_task(held_out, spec, tmp_path / "b")
    other = write_next_passage_task(held_out, NextPassageSpec.from_schema(seed=8), tmp_path / "c")
    data = (tmp_path / "a" / "next_passage_de.jsonl").read_bytes()
    assert data == (tmp_path / "b" / "next_passage_de.jsonl").read_bytes() and first["sha256"] == second["sha256"]
    assert data != (tmp_path / "c" / "next_passage_de.jsonl").read_bytes() and other["sha256"] != first["sha256"]
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == [
        "next_passage_de.jsonl",
        "next_passage_de.yaml",
        "task.json",
    ]
    assert first["examples"] == len(data.splitlines()) > 100 and first["chance"] == 0.25


def test_examples_continue_their_context_and_distractors_match_in_length(held_out):
    spec = NextPassageSpec.from_schema(examples=60, seed=3)
    examples = next_passage_examples(held_out, spec)
    assert len(examples) == 60
    labels = [example["label"] for example in examples]
    assert set(labels) == {0, 1, 2, 3}
    for example in examples:
        truth = example["endings"][example["label"]]
        source = " ".join(held_out[example["document"]].split())
        assert f"{example['context']} {truth}" in source  # the true continuation follows the context in its document
        assert len(example["endings"]) == 4 and len(set(example["endings"])) == 4
        for position, ending in enumerate(example["endings"]):
            assert spec.continuation_chars <= len(ending) <= 2 * spec.continuation_chars
            if position != example["label"]:
                assert ending not in source  # distractors come from other documents
        assert len(example["context"]) <= spec.context_chars or len(sentences(example["context"])) == 1


def test_too_little_text_is_one_line():
    with pytest.raises(TaskGenerationError, match="needs at least two documents"):
        next_passage_examples(["Ein Satz. Noch ein Satz."], NextPassageSpec.from_schema())


# --- lm-eval task definitions on local files ------------------------------------------------------


def test_the_real_arc_de_is_overridden_with_local_files():
    upstream = find_task_yaml("arc_de")
    assert upstream.name == "arc_de.yaml" and upstream.parent.name == "arc_multilingual"
    override = local_override_yaml("arc_de", upstream, M_ARC_DE)
    assert override["include"] == str(upstream) and override["task"] == "arc_de"
    assert override["dataset_path"] == "json" and override["dataset_name"] is None
    assert override["dataset_kwargs"]["data_files"] == {
        split: str(M_ARC_DE / f"{split}.jsonl") for split in ("train", "validation", "test")
    }
    with pytest.raises(EvaluationError, match="'no_such_task', which is not an installed lm-eval task"):
        find_task_yaml("no_such_task")


def test_fixtures_have_the_m_arc_layout():
    for split, count in (("train", 3), ("validation", 3), ("test", 12)):
        rows = [json.loads(line) for line in (M_ARC_DE / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(rows) == count
        for row in rows:
            assert set(row) == {"id", "instruction", "option_a", "option_b", "option_c", "option_d", "option_e", "answer"}
            assert row["answer"] in "ABCD" and row["option_e"] is None


def test_evaluation_settings_are_checked_before_any_job(base_config):
    config = dict(base_config, evaluation={"reference_models": [{"name": "tiny_neox", "path": "x/y"}]})
    with pytest.raises(ConfigError, match=r"reference_models\[0\].name 'tiny_neox' is also a training run's name"):
        validate_config(config)
    config = dict(base_config, evaluation={"tasks": ["hellaswag_de"], "local_data": {"arc_de": str(M_ARC_DE)}})
    with pytest.raises(ConfigError, match="evaluation.local_data names 'arc_de', which is not in evaluation.tasks"):
        validate_config(config)
    config = dict(base_config, evaluation={"tasks": ["arc_de"], "local_data": {"arc_de": "no/such/folder"}})
    with pytest.raises(ConfigError, match="evaluation.local_data.arc_de is 'no/such/folder'; no such folder"):
        validate_config(config)
    config = dict(base_config, evaluation={"next_passage": {"shards": "heldout"}})
    with pytest.raises(ConfigError, match="evaluation.next_passage.shards is 'heldout'; expected the name of a shard set"):
        validate_config(config)
    config = dict(base_config, evaluation={"models": ["tiny_neox"], "reference_models": [{"name": "ref", "path": "a/b"}]})
    assert evaluated_models(validate_config(config)) == ["ref", "tiny_neox"]
    assert evaluated_models(validate_config(base_config)) == ["tiny_nanochat", "tiny_neox"]


# --- bits per byte without a trained model ---------------------------------------------------------


def test_rolling_windows_score_every_token_once():
    ids = list(range(10, 27))
    windows = rolling_windows(ids, prefix=1, max_length=5)
    assert [target for _, targets in windows for target in targets] == ids
    assert all(len(inputs) == len(targets) <= 5 for inputs, targets in windows)
    assert windows[0][0] == [1, 10, 11, 12, 13] and windows[1][0] == [14, 15, 16, 17, 18]  # each window after the token before it


class UniformModel:
    """A causal LM that knows nothing: equal logits for every token of a 64-token vocabulary."""

    class config:  # noqa: N801
        vocab_size = 64
        max_position_embeddings = 8

    def __call__(self, inputs):
        import torch

        return type("Out", (), {"logits": torch.zeros((*inputs.shape, 64))})


class ByteTokenizer:
    bos_token_id, eos_token_id = 0, 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1 + byte % 63 for byte in text.encode("utf-8")]}


def test_bits_per_byte_of_a_model_that_knows_nothing_is_log2_of_its_vocabulary_per_token():
    texts = ["Grüße aus Köln.", "Ein zweiter, längerer Text über nichts Besonderes."]
    figures = bits_per_byte(UniformModel(), ByteTokenizer(), texts, max_length=8, device="cpu", batch_size=3)
    assert figures["tokens"] == figures["bytes"] == sum(len(text.encode()) for text in texts)
    assert figures["bits_per_byte"] == pytest.approx(6.0) == pytest.approx(figures["uniform_bits_per_byte"])  # log2(64) per byte
    with pytest.raises(EvaluationError, match="no held-out text"):
        bits_per_byte(UniformModel(), ByteTokenizer(), ["", ""], max_length=8, device="cpu", batch_size=3)


def test_summary_table(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"results": {"t": {"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": "t"}}}))
    (tmp_path / "b.json").write_text(
        json.dumps({"results": {BPB_TASK: {"bits_per_byte,none": 3.25, "bits_per_byte_stderr,none": "N/A"}}})
    )
    rows = summary_rows({"m": [tmp_path / "a.json", tmp_path / "b.json"], "n": [tmp_path / "b.json"]})
    write_summary(rows, tmp_path / "summary.tsv")
    assert (tmp_path / "summary.tsv").read_text().splitlines() == [
        f"model\t{BPB_TASK}/bits_per_byte\tt/acc\tt/acc_stderr",
        "m\t3.25\t0.5\t0.1",
        "n\t3.25\t\t",
    ]


def test_an_unreachable_reference_model_is_one_line(monkeypatch):
    import socket

    with socket.socket() as probe:  # a loopback port where nothing listens: the Hub is unreachable
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    spec = ModelSpec("llaemmlein", "LSX-UniWue/LLaMmlein_120M", "reference", revision="main")
    with pytest.raises(ModelLoadError) as error:
        load_lm(spec, EvalSettings.from_schema())
    message = str(error.value)
    assert message.startswith("reference model 'llaemmlein' (LSX-UniWue/LLaMmlein_120M@main) cannot be loaded: ")
    assert "\n" not in message


# --- with the tiny trained model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def untrained(tiny, tmp_path_factory):
    """The tiny export's architecture and tokenizer with fresh random weights (transformers' initialization)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("untrained")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny.export_dir))
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(tiny.export_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def next_passage(held_out, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks") / "next_passage"
    write_next_passage_task(
        held_out, NextPassageSpec.from_schema(examples=40, seed=11, context_chars=150, continuation_chars=60), folder
    )
    return folder


@pytest.mark.slow
def test_lm_eval_results_have_acc_acc_norm_and_stderr_for_every_model(tiny, untrained, next_passage, tmp_path):
    """Both models through lm-eval's API: the generated task, and the real arc_de on the local m_arc fixtures."""
    for name, folder in (("tiny", tiny.export_dir), ("untrained", untrained)):
        out = tmp_path / name / "lm_eval.json"
        evaluate_lm_eval(
            ModelSpec(name, str(folder)),
            EvalSettings.from_schema(batch_size=16),
            out,
            tasks=["arc_de"],
            generated=[next_passage],
            local_data={"arc_de": str(M_ARC_DE)},
        )
        results = json.loads(out.read_text())
        for task, count in (("next_passage_de", 40), ("arc_de", 12)):
            entry = results["results"][task]
            for key in ("acc,none", "acc_norm,none", "acc_stderr,none", "acc_norm_stderr,none"):
                assert isinstance(entry[key], float) and 0 <= entry[key] <= 1, (name, task, key, entry)
            assert results["n-samples"][task]["effective"] == count
        assert results["config"]["model_args"].startswith(f"pretrained={folder},")
        assert results["configs"]["arc_de"]["dataset_path"] == "json"  # the local data, with the upstream task's prompt
        assert results["configs"]["arc_de"]["doc_to_text"] == "query" and "samples" not in results
    # trained against untrained on the generated task: both near chance on accuracy, but the paired comparison of the
    # correct continuation's bits per byte over the same 40 items shows the trained model's lead as significant
    from nanogerman.significance import compare_results
    from nanogerman.suites import GOLD_BPB

    found = compare_results([("tiny", "untrained")], {name: tmp_path / name / "lm_eval.json" for name in ("tiny", "untrained")})
    gold = {c.task: c for c in found if c.metric == GOLD_BPB}
    assert set(gold) == {"next_passage_de", "arc_de"}, found
    lead = gold["next_passage_de"]
    assert lead.items == 40 and lead.significant and lead.high < 0, lead  # fewer bits for the trained model
    assert {c.metric for c in found if c.task == "next_passage_de"} == {"acc", "acc_norm", GOLD_BPB}


@pytest.mark.slow
def test_bits_per_byte_starts_near_uniform_and_falls_after_training(tiny, untrained, held_out, tmp_path):
    """An untrained model spends about log2(V) bits per token (~4.4 bits per byte here); training lowers it."""
    figures = {}
    for name, folder in (("untrained", untrained), ("trained", tiny.export_dir)):
        out = tmp_path / f"{name}.json"
        evaluate_bits_per_byte(ModelSpec(name, str(folder)), EvalSettings.from_schema(), held_out, out)
        figures[name] = json.loads(out.read_text())["results"][BPB_TASK]
    before, after = figures["untrained"], figures["trained"]
    assert before["bytes"] == sum(len(text.encode()) for text in held_out) and before["max_length"] == 128
    assert before["uniform_bits_per_byte"] == pytest.approx(math.log2(512) * before["tokens"] / before["bytes"])
    assert before["bits_per_byte,none"] == pytest.approx(before["uniform_bits_per_byte"], rel=0.02)
    assert after["bits_per_byte,none"] < before["bits_per_byte,none"] - 0.2, (before, after)
    assert isinstance(after["bits_per_byte_stderr,none"], float)
    # the report's "worse than uniform" flag: on the untrained export, not on the trained one
    from nanogerman.report_data import assemble_models
    from nanogerman.report_tables import uniform_flags

    models = assemble_models([], {name: [tmp_path / f"{name}.json"] for name in ("untrained", "trained")})
    flagged = {model.name: uniform_flags(model) for model in models}
    assert flagged["trained"] == [] and len(flagged["untrained"]) == 1, flagged
    assert flagged["untrained"][0].startswith("heldout_bpb worse than uniform (")


@pytest.mark.slow
def test_every_suite_task_runs_offline_with_chance_levels_from_the_task(tiny, tmp_path):
    """Every suite task (tests/test_suites.py) through lm-eval on its fixtures, with the tiny model of this module."""
    from test_suites import LOCAL_DATA, TASKS_WITH_FIXED

    out = tmp_path / "lm_eval.json"
    evaluate_lm_eval(
        ModelSpec("tiny", str(tiny.export_dir)),
        EvalSettings.from_schema(batch_size=16, bootstrap_iters=200),
        out,
        tasks=TASKS_WITH_FIXED,
        local_data=LOCAL_DATA,
    )
    results = json.loads(out.read_text())
    scores, chance, items = results["results"], results["nanogerman"]["chance"], results["nanogerman"]["items"]
    for task in TASKS_WITH_FIXED:
        assert task in scores, task
    for group in ("global_mmlu_de", "include_base_44_german"):  # the group figure, as lm-eval aggregates it
        subtasks = results["group_subtasks"][group]
        sizes = [results["n-samples"][task]["effective"] for task in subtasks]
        mean = sum(scores[task]["acc,none"] * size for task, size in zip(subtasks, sizes, strict=False)) / sum(sizes)
        assert scores[group]["acc,none"] == pytest.approx(mean)
        assert chance[group]["acc"] == pytest.approx(0.25)
    assert chance["xnli_de"]["acc"] == pytest.approx(1 / 3) and chance["paws_de"]["acc"] == pytest.approx(1 / 2)
    assert chance["mela_de"] == {"mcc": 0.0}
    assert chance["lambada_openai_mt_de"] == {"perplexity": None, "acc": None}
    assert chance["truthfulqa_de_mc2"] == {"acc": None}  # its own process_results: no uniform-guess level
    assert chance["truthfulqa_de_mc1"]["acc"] == pytest.approx(1 / 4)  # four answers per fixture question
    assert scores["lambada_openai_mt_de"]["perplexity,none"] > 1
    assert items["arc_de"]["doc_id"] == list(range(12)) and set(items["arc_de"]["acc"]) <= {0.0, 1.0}


@pytest.mark.slow
def test_two_checkpoints_give_two_rows_with_their_tokens_seen(tiny, held_out, tmp_path):
    """The tiny run's checkpoints at steps 0 and 29: each exported (logits check) and evaluated like rule checkpoint_evaluate."""
    import yaml

    from nanogerman.checkpoint_eval import evaluate_checkpoint, job_params, write_run_curves
    from nanogerman.export import export_run

    config = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8")))
    config["evaluation"]["checkpoints"].update(every=None, steps=[0], tasks=[BPB_TASK])
    metrics = tiny.manifest_path.with_name("metrics.jsonl")
    first = tmp_path / "step_0" / "hf"
    report = export_run(tiny.manifest_path, tiny.tokenizer_dir, first, step=0)
    assert report["checkpoint_step"] == 0 and report["logits_check"]["max_abs_diff"] < 1e-3
    points = []
    for step, folder in ((0, first), (29, tiny.export_dir)):
        points.append(tmp_path / f"step_{step}.json")
        evaluate_checkpoint(
            run="tiny", step=step, folder=folder, params=job_params(config), metrics=metrics, out=points[-1], texts=held_out
        )
    rows = write_run_curves(
        run="tiny",
        points=points,
        final=[],
        manifest=tiny.manifest_path,
        chance={},
        csv_out=tmp_path / "curves.csv",
        plot_out=tmp_path / "curves.svg",
    )
    weights = [record["learning/total_weights"] for record in map(json.loads, metrics.read_text().splitlines())]
    assert [(row["step"], row["metric"], row["tokens_seen"]) for row in rows] == [
        (0, "bits_per_byte", int(weights[0])),
        (29, "bits_per_byte", int(sum(weights))),
    ]
    assert int(sum(weights)) == tiny.manifest["tokens_seen"]
    assert rows[1]["value"] < rows[0]["value"] and rows[0]["reference_kind"] == "uniform"
    assert (tmp_path / "curves.csv").read_text().count("\n") == 3 and (tmp_path / "curves.png").is_file()


@pytest.mark.slow
def test_a_clean_subset_runs_through_lm_eval_beside_its_task(tiny, tmp_path):
    """evaluation.contamination.clean_subsets: arc_de_clean is arc_de without the document the contamination result lists."""
    from nanogerman.report import ReportSettings, assemble_models, select_columns

    result = tmp_path / "arc_de.json"
    result.write_text(json.dumps({"task": "arc_de", "documents": 12, "contaminated": 1, "contaminated_ids": [3]}))
    out = tmp_path / "lm_eval.json"
    evaluate_lm_eval(
        ModelSpec("tiny", str(tiny.export_dir)),
        EvalSettings.from_schema(batch_size=16, bootstrap_iters=200),
        out,
        tasks=["arc_de"],
        local_data={"arc_de": str(M_ARC_DE)},
        clean={"arc_de": str(result)},
    )
    results = json.loads(out.read_text())
    assert (results["n-samples"]["arc_de"]["effective"], results["n-samples"]["arc_de_clean"]["effective"]) == (12, 11)
    items = results["nanogerman"]["items"]
    kept = [acc for doc, acc in zip(items["arc_de"]["doc_id"], items["arc_de"]["acc"], strict=True) if doc != 3]
    assert items["arc_de_clean"]["acc"] == kept  # the same documents, scored the same, without the contaminated one
    columns = select_columns(assemble_models([], {"tiny": [out]}), ReportSettings(task_order=("arc_de",)))
    assert [column.task for column in columns][:4] == ["arc_de", "arc_de", "arc_de_clean", "arc_de_clean"]
    assert [column.averaged for column in columns][:4] == [True, True, False, False]  # Avg. counts each task once
