"""Results report: tables, averages, bolding and flags from fixture result files with known numbers.

The fixtures in tests/data/report/ (see its README.md) are written in the formats of the
training stage (train.json, metrics.jsonl), lm-eval (results JSON) and the tokenizer
evaluation (per-tokenizer JSON). The Snakemake rule and ``snakemake --report`` are run on
them in a small workflow that includes rules/report.smk.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, VENV_BIN, default_config

from nanogerman.config import ConfigError, validate_config
from nanogerman.report_data import (
    ReportError,
    Run,
    Score,
    assemble_models,
    read_loss_curve,
    read_scores,
    read_train_manifest,
)
from nanogerman.report_flags import FlagSettings, ReportSettings, loss_drop, near_chance, run_flags
from nanogerman.report_tables import (
    average,
    markdown_report,
    missing_tasks,
    overview_table,
    run_table,
    select_columns,
)
from nanogerman.tables import Cell, Table, best_positions
from nanogerman.tokenizer_eval_summary import markdown_table as tokenizer_markdown

DATA = Path(__file__).parent / "data" / "report"
SEED_TASKS = ["arc_de", "hellaswag_de", "m_mmlu_de", "truthfulqa_de_mc1", "truthfulqa_de_mc2"]
RUNS = ["tiny_good", "seed_lr"]
EVALUATIONS = {  # the evaluation stage's layout: results/eval/<model>/lm_eval.json and bits_per_byte.json
    "llaemmlein": [DATA / "eval" / "llaemmlein" / "lm_eval.json"],
    "tiny_good": [DATA / "eval" / "tiny_good" / "lm_eval.json", DATA / "eval" / "tiny_good" / "bits_per_byte.json"],
    "seed_lr": [DATA / "eval" / "seed_lr" / "lm_eval.json"],  # bits per byte inside, as another task
}
TOKENIZERS = [DATA / "tokenizer_eval" / "llaemmlein.json", DATA / "tokenizer_eval" / "sample_nanochat.json"]
CONFIG = {"evaluation": {"tasks": SEED_TASKS}, "report": {"average_tasks": SEED_TASKS}}


def settings(**report) -> ReportSettings:
    config = copy.deepcopy(CONFIG)
    config["report"].update(report)
    return ReportSettings.from_config(config)


def runs() -> list[Run]:
    return [read_train_manifest(DATA / "train" / name / "train.json") for name in RUNS]


def models():
    return assemble_models(runs(), EVALUATIONS)


def rows(markdown: str) -> dict[str, str]:
    """Table rows of a Markdown text by their first cell."""
    found = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            found.setdefault(line.split(" | ")[0][2:], line)
    return found


# --- readers ---------------------------------------------------------------------------------------


def test_train_manifest_reader_takes_the_training_stages_keys():
    run = read_train_manifest(DATA / "train" / "seed_lr" / "train.json")
    assert (run.name, run.tokenizer, run.learning_rate, run.steps) == ("seed_lr", "nano_nanochat", 6e-06, 14500)
    assert (run.global_batch_size, run.context, run.tokens_seen) == (1024, 2048, 30408704000)
    assert (run.first_loss, run.final_loss, run.tail_loss) == (11.09, 10.61, 10.62)
    assert (run.wall_seconds, run.accelerator, run.devices) == (151200.0, "v6e-8", 8)
    assert run.config_hash == "b" * 12 + "2" * 52 and run.versions["maxtext"] == "0.2.5"


def test_loss_curve_keeps_the_last_record_of_a_step_and_skips_a_torn_line():
    curve = read_loss_curve(DATA / "train" / "tiny_good" / "metrics.jsonl")
    assert curve == [(0, 7.625), (1, 7.61), (2, 7.5), (5, 7.2), (10, 6.8), (50, 5.1), (100, 4.2), (200, 3.6), (299, 3.412)]


def test_scores_reader_takes_lm_evals_keys_and_ignores_na_stderr():
    scores, provenance = read_scores(DATA / "eval" / "seed_lr" / "lm_eval.json")
    assert scores[("arc_de", "acc")] == Score(0.24, 0.0125)
    assert scores[("arc_de", "acc_norm")] == Score(0.31, 0.0135)
    assert scores[("m_mmlu_de", "acc")] == Score(0.229, 0.0036)
    assert ("m_mmlu_de", "acc_norm") not in scores
    assert scores[("heldout_bpb", "bits_per_byte")] == Score(7.912, None)  # stderr "N/A"
    assert provenance["versions"] == {"lm_eval": "0.4.13", "transformers": "4.57.1"}
    assert provenance["model_args"] == "pretrained=results/hf/seed_lr,dtype=float32"
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["eval_config_hash"])


def test_models_merge_results_files_and_list_references_first():
    found = models()
    assert [(model.name, model.kind) for model in found] == [
        ("llaemmlein", "reference"),
        ("tiny_good", "trained"),
        ("seed_lr", "trained"),
    ]
    tiny = found[1]
    assert tiny.run.name == "tiny_good"
    assert tiny.scores[("heldout_bpb", "bits_per_byte")] == Score(2.345, None)  # from the second file
    assert tiny.evaluation["versions"] == {"lm_eval": "0.4.13", "torch": "2.9.1", "transformers": "4.57.1"}
    assert tiny.scores[("next_passage_de", "acc")] == Score(0.41, 0.022)


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("missing.json", None, "missing.json: evaluation results not found"),
        ("broken.json", "{not json", "broken.json: evaluation results is not valid JSON"),
        ("other.json", '{"accuracy": 0.3}', "other.json: no 'results' object; expected lm-eval's results JSON"),
    ],
)
def test_a_bad_results_file_is_one_line(tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReportError) as error:
        read_scores(path)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_a_train_json_without_a_key_names_it(tmp_path):
    data = json.loads((DATA / "train" / "tiny_good" / "train.json").read_text())
    del data["tokens_seen"]
    (tmp_path / "train.json").write_text(json.dumps(data))
    with pytest.raises(
        ReportError, match=r"train.json: the training manifest has no 'tokens_seen'; rerun the job that writes it"
    ):
        read_train_manifest(tmp_path / "train.json")
    with pytest.raises(ReportError, match="metrics.jsonl: training metrics not found"):
        read_loss_curve(tmp_path / "metrics.jsonl")


# --- columns, averages, bolding, flags ------------------------------------------------------------


def test_columns_follow_the_evaluation_tasks_then_the_rest():
    columns = select_columns(models(), settings())
    assert [column.key for column in columns] == [
        "arc_de/acc",
        "arc_de/acc_norm",
        "hellaswag_de/acc",
        "hellaswag_de/acc_norm",
        "m_mmlu_de/acc",
        "truthfulqa_de_mc1/acc",
        "truthfulqa_de_mc2/acc",
        "next_passage_de/acc",
        "next_passage_de/acc_norm",
        "heldout_bpb/bits_per_byte",
    ]
    assert [column.chance for column in columns] == [0.25, 0.25, 0.25, 0.25, 0.25, 0.2, None, 0.25, 0.25, None]
    assert [column.averaged for column in columns] == [True] * 7 + [False] * 3


def test_report_tasks_choose_and_order_the_columns():
    chosen = settings(tasks=["hellaswag_de", "arc_de", "belebele_de"])
    assert [column.key for column in select_columns(models(), chosen)] == [
        "hellaswag_de/acc",
        "hellaswag_de/acc_norm",
        "arc_de/acc",
        "arc_de/acc_norm",
    ]
    assert missing_tasks(models(), chosen) == ["belebele_de"]


def test_overview_markdown_bolds_the_best_marks_chance_and_averages_exactly():
    chosen = settings()
    found = models()
    table = overview_table(found, select_columns(found, chosen), chosen.flags).markdown()
    assert table.splitlines()[0] == (
        "| Model | arc_de acc | arc_de acc_norm | hellaswag_de acc | hellaswag_de acc_norm | m_mmlu_de acc | "
        "truthfulqa_de_mc1 acc | truthfulqa_de_mc2 acc | next_passage_de acc | next_passage_de acc_norm | "
        "heldout_bpb bits/byte | Avg. | Flags |"
    )
    assert table.splitlines()[1] == "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    assert rows(table) == {
        "Model": table.splitlines()[0],
        # Avg. (0.28 + 0.31 + 0.32 + 0.38 + 0.26 + 0.24 + 0.43) / 7 = 0.31714; best, so bold.
        # ≈ (no per-item data: unpaired z-test): arc_de acc 0.28 - 0.25 = 0.03 over hypot(0.0131, 0.0126) = 0.0182 is z 1.65,
        # p 0.099; m_mmlu 0.01 / hypot(0.0037, 0.0037) = z 1.91, p 0.056; a tie (acc_norm) is no lead. hellaswag_de: z > 9.
        "llaemmlein": "| llaemmlein | **0.2800**≈ ± 0.0131 | **0.3100**≈ ± 0.0135 | **0.3200** ± 0.0047 | **0.3800** ± 0.0048 "
        "| **0.2600**≈ ± 0.0037 | 0.2400 ± 0.0150 | 0.4300 ± 0.0160 | --- | --- | --- | **0.3171** |  |",
        # 2.025 / 7 = 0.28929; |0.27 - 0.25| = 0.02 <= 2 x 0.0130: at chance; |0.26 - 0.25| = 0.01 > 2 x 0.0044: not
        "tiny_good": "| tiny_good | 0.2500† ± 0.0126 | 0.2700† ± 0.0130 | 0.2600 ± 0.0044 | 0.2650 ± 0.0044 | 0.2500† ± 0.0037 "
        "| **0.2600**≈ ± 0.0153 | 0.4700 ± 0.0161 | **0.4100** ± 0.0220 | **0.4500** ± 0.0222 | **2.345** | 0.2893 "
        "| † 3 at chance |",
        # 1.959 / 7 = 0.27986; arc_de acc_norm ties llaemmlein's 0.3100: both bold; m_mmlu 0.229 is below chance by > 2 SE
        "seed_lr": "| seed_lr | 0.2400† ± 0.0125 | **0.3100**≈ ± 0.0135 | 0.2510† ± 0.0043 | 0.2490† ± 0.0043 | 0.2290 ± 0.0036 "
        "| 0.1900† ± 0.0137 | **0.4900**≈ ± 0.0165 | 0.2600† ± 0.0196 | 0.2500† ± 0.0194 | 7.912 | 0.2799 "
        "| † 6 at chance; § learning rate 6.0e-06; ‡ loss fell 4.2% |",
    }


def test_avg_over_every_task_needs_every_column():
    chosen = settings(average_tasks=None)
    found = models()
    columns = select_columns(found, chosen)
    assert [average(model, columns) for model in found][0] is None  # llaemmlein lacks next_passage_de
    assert average(found[1], columns) == pytest.approx((2.025 + 0.41 + 0.45) / 9)
    table = rows(overview_table(found, columns, chosen.flags).markdown())
    assert table["llaemmlein"].endswith("| --- | --- | --- | --- |  |")
    assert table["tiny_good"].endswith("| **2.345** | **0.3206** | † 3 at chance |")  # 2.885 / 9
    assert table["seed_lr"].endswith("| 7.912 | 0.2743 | † 6 at chance; § learning rate 6.0e-06; ‡ loss fell 4.2% |")


def test_runs_without_evaluation_results_still_get_rows_and_flags():
    chosen = settings()
    found = assemble_models(runs(), {})
    page = markdown_report(found, select_columns(found, chosen), runs(), [], chosen, "fixture")
    assert rows(page)["Model"] == "| Model | Avg. | Flags |"
    assert rows(page)["tiny_good"] == "| tiny_good | --- |  |"
    assert rows(page)["seed_lr"] == "| seed_lr | --- | § learning rate 6.0e-06; ‡ loss fell 4.2% |"
    assert "- No evaluation results yet: the task columns appear once the evaluation stage has run." in page
    assert "No tokenizer evaluation." in page


def test_near_chance_needs_a_stderr_and_a_chance_level():
    assert near_chance(Score(0.27, 0.013), 0.25, 2.0)
    assert not near_chance(Score(0.27, 0.009), 0.25, 2.0)
    assert not near_chance(Score(0.27, 0.013), 0.25, 1.0)
    assert not near_chance(Score(0.25, None), 0.25, 2.0)
    assert not near_chance(Score(0.25, 0.01), None, 2.0)
    assert not near_chance(None, 0.25, 2.0)


def run_with(**changes) -> Run:
    return Run(**{**read_train_manifest(DATA / "train" / "tiny_good" / "train.json").__dict__, **changes})


@pytest.mark.parametrize(
    "learning_rate, flagged", [(6e-06, True), (4e-06, True), (6e-4, False), (3e-3, False), (1e-4, False), (5e-2, True)]
)
def test_learning_rate_flag(learning_rate, flagged):
    assert ("lr" in run_flags(run_with(learning_rate=learning_rate), FlagSettings.from_schema())) is flagged


def test_loss_flag():
    flags = FlagSettings.from_schema()
    assert loss_drop(run_with(first_loss=10.0, tail_loss=8.0)) == pytest.approx(0.2)
    assert run_flags(run_with(first_loss=10.0, tail_loss=8.0), flags) == {}
    assert run_flags(run_with(first_loss=10.0, tail_loss=9.5), flags) == {"loss": "loss fell 5.0%"}
    assert run_flags(run_with(first_loss=10.0, tail_loss=10.5), flags) == {"loss": "loss fell -5.0%"}
    assert run_flags(run_with(first_loss=10.0, tail_loss=math.nan), flags) == {"loss": "loss not finite"}
    assert run_flags(run_with(first_loss=10.0, tail_loss=9.5), FlagSettings.from_schema(min_loss_drop=0.01)) == {}


def test_run_table_exactly():
    table = run_table(runs(), FlagSettings.from_schema()).markdown()
    assert rows(table) == {
        "Run": "| Run | Tokenizer | Learning rate | Steps | Batch (seq. × tokens) | Tokens seen | Loss (first → final) | Wall time "
        "| Accelerator | Config hash | Flags |",
        "tiny_good": "| tiny_good | sample_nanochat | 6.0e-04 | 300 | 8 × 128 | 307.2 k | 7.625 → 3.412 | 95 s | cpu "
        "| aaaaaaaaaaaa |  |",
        "seed_lr": "| seed_lr | nano_nanochat | 6.0e-06§ | 14,500 | 1,024 × 2,048 | 30.41 B | 11.090 → 10.610‡ | 42.0 h | v6e-8 "
        "| bbbbbbbbbbbb | learning rate 6.0e-06; loss fell 4.2% |",
    }


def test_latex_tables_escape_and_mark():
    chosen = settings(tasks=["arc_de"])
    found = models()
    latex = overview_table(found, select_columns(found, chosen), chosen.flags).latex()
    assert latex.splitlines()[:4] == [
        r"\begin{tabular}{lrrrl}",
        r"\toprule",
        r"Model & arc\_de acc & arc\_de acc\_norm & Avg. & Flags \\",
        r"\midrule",
    ]
    assert (
        r"tiny\_good & 0.2500\textsuperscript{\dag} {\scriptsize $\pm$ 0.0126} & 0.2700\textsuperscript{\dag} "
        r"{\scriptsize $\pm$ 0.0130} & 0.2600 & \dag{} 2 at chance \\"
    ) in latex  # Avg. of the averaged columns shown
    runs_latex = run_table(runs(), FlagSettings.from_schema()).latex()
    assert (
        r"seed\_lr & nano\_nanochat & 6.0e-06\textsuperscript{\S} & 14,500 & 1,024 $\times$ 2,048 & 30.41 B & "
        r"11.090 $\rightarrow$ 10.610\textsuperscript{\ddag} & 42.0 h & v6e-8 & bbbbbbbbbbbb & "
        r"learning rate 6.0e-06; loss fell 4.2\% \\"
    ) in runs_latex


def test_table_helpers():
    assert best_positions([0.31, None, 0.30999, 0.2], higher_is_better=True, fmt="{:.4f}".format) == {0, 2}
    assert best_positions([2.3, 1.1], higher_is_better=False, fmt="{:.3f}".format) == {1}
    assert best_positions([None, None], higher_is_better=True, fmt=str) == set()
    table = Table(["Name", "Value"])
    table.add(["a|b", Cell("---", bold=True)])
    assert table.markdown() == "| Name | Value |\n|---|---:|\n| a\\|b | --- |\n"
    with pytest.raises(ValueError):
        table.add(["only one"])


def test_report_config_is_checked():
    config = default_config()
    config["report"] = {"flags": {"learning_rate_range": [1e-2, 1e-4]}}
    with pytest.raises(ConfigError, match=r"report.flags.learning_rate_range is \[0.01, 0.0001\]; expected \[low, high\]"):
        ReportSettings.from_config(validate_config(config))
    config["report"] = {"chance": {"next_passage_de": 1.5}}
    with pytest.raises(ConfigError, match="report.chance.next_passage_de is 1.5"):
        validate_config(config)
    config["report"] = {"chance": {"truthfulqa_de_mc2": 0.45}}
    chosen = ReportSettings.from_config(validate_config(config))
    assert chosen.chance["truthfulqa_de_mc2"] == 0.45 and chosen.chance["arc_de"] == 0.25
    assert chosen.flags == FlagSettings.from_schema()


# --- the rule, the whole report and `snakemake --report` ---------------------------------------------


STANDALONE = """
configfile: "config.yaml"
RESULTS = "results"
TOKENIZER_EVAL = f"{{RESULTS}}/tokenizer_eval"

def train_runs():
    return {runs!r}

def train_manifest(name):
    return f"{{RESULTS}}/train/{{name}}/train.json"

def tokenizer_eval_outputs():
    return ["summary"]

def tokenizer_eval_names():
    return {tokenizers!r}

def eval_results():
    return {evaluations!r}

include: "{rules}"

rule all:
    default_target: True
    input: report_outputs()
"""


def standalone(
    workdir: Path, *, run_names: list[str], tokenizers: list[str], evaluations: dict, report: dict, evaluation: dict | None = None
) -> None:
    """A workflow in ``workdir`` whose other stages are stand-in functions over files already in results/."""
    (workdir / "Snakefile").write_text(
        STANDALONE.format(runs=run_names, tokenizers=tokenizers, evaluations=evaluations, rules=REPO / "rules" / "report.smk")
    )
    config = {"results_dir": "results", "report": report, **({"evaluation": evaluation} if evaluation else {})}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The workflow in ``workdir`` (its own Snakefile and config.yaml), one core."""
    command = [str(VENV_BIN / "snakemake"), *args, "-s", str(workdir / "Snakefile"), "--directory", str(workdir), "--cores", "1"]
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = f"{VENV_BIN}{os.pathsep}{full_env.get('PATH', '')}"
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=300)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    """rules/report.smk run on every fixture, then `snakemake --report report.html` (offline).

    The charts' text is kept as SVG text (a matplotlibrc for the job) so that their labels can be read.
    """
    workdir = tmp_path_factory.mktemp("workflow")
    results = workdir / "results"
    for name in RUNS:
        shutil.copytree(DATA / "train" / name, results / "train" / name)
    shutil.copytree(DATA / "tokenizer_eval", results / "tokenizer_eval")
    shutil.copytree(DATA / "eval", results / "eval")
    report = validate_config(default_config())["report"]
    report.update(CONFIG["report"])
    standalone(
        workdir,
        run_names=RUNS,
        tokenizers=[path.stem for path in TOKENIZERS],
        report=report,
        evaluations={name: [f"results/eval/{name}/{path.name}" for path in paths] for name, paths in EVALUATIONS.items()},
        evaluation=CONFIG["evaluation"],
    )
    (workdir / "matplotlibrc").write_text("svg.fonttype: none\n")
    env = {"NANOGERMAN_GIT_COMMIT": "fixture", "MATPLOTLIBRC": str(workdir / "matplotlibrc")}
    built = snakemake(workdir, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    reported = snakemake(workdir, "--report", str(workdir / "report.html"), env=env)
    assert reported.returncode == 0, reported.stderr[-3000:]
    return workdir


def test_report_page_holds_every_table(workflow):
    out = workflow / "results" / "report"
    page = (out / "overview.md").read_text()
    assert [line for line in page.splitlines() if line.startswith("#")] == [
        "# Results",
        "## Models",
        "## Training runs",
        "## Tokenizers",
        "## Provenance",
    ]
    chosen = settings()
    found = models()
    assert overview_table(found, select_columns(found, chosen), chosen.flags).markdown() in page
    assert run_table(runs(), chosen.flags).markdown() in page
    tokenizer_results = [json.loads(path.read_text()) for path in TOKENIZERS]
    assert tokenizer_markdown(tokenizer_results) in page
    assert (
        "- † within 2 standard errors of chance (chance: arc_de 0.25, hellaswag_de 0.25, m_mmlu_de 0.25, "
        "truthfulqa_de_mc1 0.2, truthfulqa_de_mc2 none, next_passage_de 0.25)." in page
    )
    assert page == markdown_report(found, select_columns(found, chosen), runs(), tokenizer_results, chosen, "fixture")
    assert "arc_de acc: llaemmlein over tiny_good by +0.0300 (p = 0.099, unpaired z-test on value ± stderr)" in page
    html = (out / "overview.html").read_text()
    assert '<td style="text-align: right;"><strong>0.2800</strong>≈ ± 0.0131</td>' in html and "<h2>Training runs</h2>" in html
    assert (workflow / "results" / "logs" / "report.log").is_file()


def test_provenance_on_every_row(workflow):
    import pandas as pd

    out = workflow / "results" / "report"
    overview = pd.read_csv(out / "overview.csv")
    assert list(overview["model"]) == ["llaemmlein", "tiny_good", "seed_lr"]
    assert list(overview["git_commit"]) == ["fixture"] * 3
    assert overview["train_config_hash"].tolist()[1:] == ["a" * 12 + "1" * 52, "b" * 12 + "2" * 52]
    assert overview["eval_config_hash"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert overview.loc[0, "versions"] == "lm_eval 0.4.13, transformers 4.57.1"
    assert overview.loc[1, "versions"].startswith("flax 0.12.0, jax 0.8.1, jaxlib 0.8.1, lm_eval 0.4.13, maxtext 0.2.5")
    assert overview.loc[1, "avg"] == pytest.approx(2.025 / 7)
    assert overview["arc_de/acc_near_chance"].tolist() == [False, True, True]
    assert overview.loc[2, "heldout_bpb/bits_per_byte"] == 7.912 and math.isnan(
        overview.loc[2, "heldout_bpb/bits_per_byte_stderr"]
    )
    run_rows = pd.read_csv(out / "runs.csv")
    assert run_rows["flag_learning_rate"].tolist() == [False, True] and run_rows["flag_loss"].tolist() == [False, True]
    assert run_rows.loc[1, "loss_drop"] == pytest.approx((11.09 - 10.62) / 11.09)
    assert run_rows["git_commit"].tolist() == ["fixture"] * 2 and run_rows["config_hash"].str.len().tolist() == [64, 64]
    tokenizers = pd.read_csv(out / "tokenizers.csv")
    assert tokenizers["tokenizer"].tolist() == ["llaemmlein", "sample_nanochat"]
    assert tokenizers.loc[0, "hub_commit"] == "c0ffee" * 6 + "c0ff" and tokenizers.loc[0, "git_commit"] == "fixture"
    assert tokenizers.loc[0, "versions"].startswith("huggingface_hub 0.36.0, pyarrow 22.0.0")
    record = json.loads((out / "provenance.json").read_text())
    assert record["git_commit"] == "fixture"
    assert record["settings"]["averaged"] == [
        f"{task}/{metric}"
        for task, metric in [
            ("arc_de", "acc"),
            ("arc_de", "acc_norm"),
            ("hellaswag_de", "acc"),
            ("hellaswag_de", "acc_norm"),
            ("m_mmlu_de", "acc"),
            ("truthfulqa_de_mc1", "acc"),
            ("truthfulqa_de_mc2", "acc"),
        ]
    ]
    digest = hashlib.sha256(TOKENIZERS[0].read_bytes()).hexdigest()
    assert record["inputs"]["results/tokenizer_eval/llaemmlein.json"] == digest
    assert record["models"]["seed_lr"]["train_config_hash"] == "b" * 12 + "2" * 52


def test_charts_carry_chance_lines_whiskers_and_flags(workflow):
    plots = workflow / "results" / "report" / "plots"
    names = {path.relative_to(plots).as_posix() for path in plots.rglob("*.*")}
    expected = {
        "loss_curves",
        "tasks",
        "tokenizers/fertility",
        "tokenizers/vocab_utilization",
        "tokenizers/type_token_ratio",
        "tokenizers/token_length",
        "tokenizers/tokens_per_line",
    }
    assert names == {f"{name}.{fmt}" for name in expected for fmt in ("svg", "png")}
    loss = (plots / "loss_curves.svg").read_text()
    assert "seed_lr § learning rate 6.0e-06 ‡ loss fell 4.2%" in loss and "training step + 1 (log scale)" in loss
    assert "tiny_good validation" in loss and "seed_lr validation" not in loss and "overfitting" not in loss
    tasks = (plots / "tasks.svg").read_text()
    assert tasks.count("chance 0.25") == 7 and tasks.count("chance 0.2<") == 1  # a legend per panel with a chance level
    assert "0.2500†" in tasks and "0.1900†" in tasks and "Whiskers: ± 2 standard errors" in tasks
    assert "heldout_bpb bits/byte" in tasks


def test_snakemake_report_holds_every_output_and_the_rule_graph(workflow):
    text = (workflow / "report.html").read_text()
    for name in (
        "overview.html",
        "overview.md",
        "overview.csv",
        "overview.tex",
        "runs.csv",
        "tokenizers.csv",
        "provenance.json",
        "loss_curves.svg",
        "tasks.svg",
        "fertility.svg",
        "tokens_per_line.svg",
    ):
        assert name in text, name
    for category in ("1. Overview", "2. Tables", "3. Plots", "4. Provenance"):
        assert category in text, category
    assert "results_report" in text  # the rule graph
    assert not re.search(r"<script[^>]+src=\"https?://", text)  # nothing fetched when opened offline


def test_broken_input_fails_the_rule_with_one_line(tmp_path):
    results = tmp_path / "results"
    for name in RUNS:
        shutil.copytree(DATA / "train" / name, results / "train" / name)
    (results / "train" / "seed_lr" / "train.json").write_text("{}")
    standalone(tmp_path, run_names=RUNS, tokenizers=[], evaluations={}, report=validate_config(default_config())["report"])
    failed = snakemake(tmp_path)
    assert failed.returncode != 0
    assert "results/train/seed_lr/train.json: the training manifest has no 'run'; rerun the job that writes it" in failed.stderr
    assert "Traceback" not in (results / "logs" / "report.log").read_text()
    assert not (results / "report" / "overview.md").exists()


@pytest.mark.slow
def test_report_of_the_embedded_default_run_without_training(tmp_path, base_config, snakemake_run):
    """The real workflow on the default config (runs left out: no MaxText), up to the report; then `--report`."""
    base_config["training"]["runs"] = []
    built = snakemake_run(tmp_path, base_config, "results/report/overview.html")
    assert built.returncode == 0, built.stderr[-3000:]
    page = (tmp_path / "results" / "report" / "overview.md").read_text()
    assert "| sample_nanochat |" in page and "| sample_neox |" in page  # the tokenizer table
    assert "No training runs." in page
    reported = snakemake_run(tmp_path, base_config, "--report", str(tmp_path / "results" / "report.html"))
    assert reported.returncode == 0, reported.stderr[-3000:]
    text = (tmp_path / "results" / "report.html").read_text()
    assert "fertility.svg" in text and "results_report" in text and "tokenizer_eval" in text


def test_report_settings_reach_the_job_as_builtins_and_come_back_equal():
    """Snakemake tracks only builtin params: an object param would never rerun the report when a flag changes."""
    config = validate_config(default_config())
    config["report"]["flags"]["chance_stderrs"] = 3.0
    config["report"]["average_tasks"] = ["next_passage_de"]
    settings = ReportSettings.from_config(config)
    param = settings.as_param()
    assert json.loads(json.dumps(param)) == json.loads(json.dumps(param))  # only builtins inside
    assert param["flags"]["chance_stderrs"] == 3.0
    assert ReportSettings.from_param(json.loads(json.dumps(param))) == settings
