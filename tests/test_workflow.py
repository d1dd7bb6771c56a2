"""The whole embedded default, as the README's commands run it, and what a changed value reruns.

The run goes through both of the README's executors in one copy of the repository, with the copy as
the working directory, and costs one run of the default:

1. `snakemake --profile profiles/cluster-generic <targets>`: the data stages (corpus, tokenizers,
   tokenizer evaluation, dataset, the generated evaluation task), every job submitted by
   profiles/cluster-generic/submit.py (its own detached process, a scrubbed environment, another
   working directory: nothing but its declared inputs and params);
2. README command 1 as typed (`snakemake --cores all`): the rest (smoke check, training, exports,
   checkpoint and final evaluations, comparisons, report) on Snakemake's local executor.

More through the cluster executor does not fit the suite's 15 minutes on 2 cores: each submitted job
starts Snakemake again (about 6 s of a core). A second whole run took the suite past 20 minutes, and
the first run's training, export and evaluations through it to 16 min 45 s. The copy's
`config/config.yaml` differs from the repository's in one key: a `results_dir` that MaxText's own
config parser would cut or turn into a mapping if a value reached it unquoted.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow, dry_run_jobs, snakemake_at_root

SENTINEL = "hf_SENTINEL_c0ffee_not_a_real_token"  # an HF_TOKEN that must reach no file
# ' #' would start a YAML comment and ': ' a mapping in MaxText's own config parser (OmegaConf): paths must survive both
RESULTS_DIR = "res #1: x"
README_COMMAND = ("--cores", "all")


CLUSTER_COMMAND = ("--profile", "profiles/cluster-generic")
TOKENS = {"HF_TOKEN": SENTINEL, "HUGGING_FACE_HUB_TOKEN": SENTINEL}


def cluster_targets() -> list[str]:
    """The data stages: corpus, tokenizers, tokenizer evaluation, dataset and the generated evaluation task."""
    results = RESULTS_DIR
    return [
        f"{results}/tokenizer_eval/summary/tokenizer_eval.md",
        f"{results}/dataset/dataset.json",
        f"{results}/eval/tasks/next_passage",
    ]


def executed(output: str) -> tuple[list[str], list[str]]:
    """(rules of the jobs, rules of the local jobs) a Snakemake run's log lists, one entry per job (with a cluster
    executor, the jobs it submits and the local rules it runs itself)."""
    jobs = [line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("rule ")]
    local = [line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("localrule ")]
    return jobs, local


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The cluster half, then README command 1, in a copy of the repository; yields (root, cluster run, command 1 run)."""
    root = copy_workflow(tmp_path_factory.mktemp("repo"))
    config_file = root / "config" / "config.yaml"
    config_file.write_text(config_file.read_text(encoding="utf-8") + f"\nresults_dir: {json.dumps(RESULTS_DIR)}\n")
    cluster = snakemake_at_root(root, *CLUSTER_COMMAND, *cluster_targets(), env=TOKENS, timeout=1500)
    if cluster.returncode != 0:
        return root, cluster, cluster
    return root, cluster, snakemake_at_root(root, *README_COMMAND, env=TOKENS, timeout=1500)


@pytest.mark.slow
def test_both_executors_ran_their_half_and_command_1_finished_the_workflow(default_run):
    root, cluster, result = default_run
    output = cluster.stdout + cluster.stderr
    assert cluster.returncode == 0, output[-4000:]
    jobs, local = executed(output)
    stages = {"corpus_shard", "tokenizer_train", "tokenizer_eval", "dataset_part", "dataset_assemble"}
    assert stages | {"eval_next_passage_task"} <= set(jobs), sorted(set(jobs))
    assert output.count("Submitted job ") == len(jobs) >= 15, output[-3000:]  # every job but the local rules
    scratch = list((root / ".snakemake" / "cluster-generic").iterdir())
    assert len(scratch) == len(jobs) and all((folder / "job.log").is_file() for folder in scratch)
    assert "train_run" not in jobs + local and "results_report" not in local
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    jobs = sum(executed(output), [])  # the local executor lists every job as a "localrule"
    assert {"train_smoke", "train_run", "export_hf", "checkpoint_export", "checkpoint_evaluate", "eval_lm_eval"} <= set(jobs)
    assert not stages & set(jobs) and "Submitted job" not in output, jobs
    assert jobs.count("train_run") == 2 and "results_report" in jobs


@pytest.mark.slow
def test_default_workflow_end_to_end(default_run):
    root, _, result = default_run
    assert result.returncode == 0, result.stderr[-3000:]
    results = root / RESULTS_DIR
    corpus = json.loads((results / "corpus" / "corpus.json").read_text())
    assert corpus["shard_sets"]["train"]["shards"] == 4
    train = json.loads((results / "train" / "tiny_neox" / "train.json").read_text())
    arguments = dict(argument.split("=", 1) for argument in train["maxtext_args"][1:])
    assert arguments["base_output_directory"] == json.dumps(str(results / "checkpoints"))  # quoted for OmegaConf
    assert not (root / "res").exists()  # nothing written where a path cut at ' #' would point
    assert_no_secret_on_disk(results, SENTINEL)
    smoke = json.loads((results / "train" / "smoke" / "local.json").read_text())  # the smoke job before the runs
    assert smoke["steps"] == 5 and len(smoke["losses"]) == 5 and all(map(math.isfinite, smoke["losses"])), smoke
    # a run that generalizes: held-out bits per byte well below a uniform guess, validation loss falling, no flags
    from nanogerman.curves import eval_curve, overfitting_step, read_metrics

    for run in ("tiny_nanochat", "tiny_neox"):
        bpb = json.loads((results / "eval" / run / "bits_per_byte.json").read_text())["results"]["heldout_bpb"]
        assert bpb["bits_per_byte,none"] <= 0.85 * bpb["uniform_bits_per_byte"], (run, bpb)
        records = read_metrics(results / "train" / run / "metrics.jsonl")
        validation = [loss for _, loss in eval_curve(records)]
        assert len(validation) == 6 and overfitting_step(records) is None, (run, validation)  # after steps 0, 50, …, 250
        assert sum(later < earlier for earlier, later in zip(validation, validation[1:], strict=False)) >= 4, (run, validation)
        rows = (results / "checkpoint_eval" / run / "curves.csv").read_text().splitlines()[1:]
        assert {int(row.split(",")[1]) for row in rows} == {0, 150, 299}, rows  # three evaluated checkpoints
        evaluated = list((results / "checkpoint_eval" / run).glob("*/step_150.json"))  # under the run settings' key
        assert len(evaluated) == 1 and not (evaluated[0].parent / "step_150" / "hf").exists()  # the export deleted
    overview = (results / "report" / "overview.md").read_text()
    assert "worse than uniform" not in overview and "overfitting" not in overview and "no improvement" not in overview
    comparisons = (results / "eval" / "comparisons.md").read_text().strip()
    assert "\n## Comparisons\n" in overview and comparisons in overview  # the two runs differ in their tokenizer
    assert "| tiny_nanochat | tiny_neox | next_passage_de | gold_bits_per_byte |" in comparisons
    again = snakemake_at_root(root, "-n", *README_COMMAND)
    assert "Nothing to be done" in again.stdout + again.stderr


def assert_no_secret_on_disk(folder, secret: str) -> None:
    """No file under ``folder`` (binary files, TensorBoard event files and logs included) holds ``secret``."""
    needle = secret.encode()
    checked = 0
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as handle:
                assert needle not in handle.read(), f"{path} holds the HF_TOKEN"
            checked += 1
    events = [name for _, _, files in os.walk(folder) for name in files if name.startswith("events.out.tfevents")]
    assert checked > 100 and events, (checked, events)  # the search covered MaxText's TensorBoard files


# --- a changed value reruns exactly the jobs that depend on it ------------------------------------


def planned_jobs(root: Path, config: dict) -> set[str]:
    """The jobs `snakemake -n` plans for ``config`` (written beside the default), as 'rule[wildcards]' or 'rule'."""
    path = root / "config" / "changed.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result = snakemake_at_root(root, "-n", *README_COMMAND, f"--configfile={path}")
    assert result.returncode == 0, result.stderr[-2000:]
    # the keys of the checkpoint jobs and of the runs' checks gates (hashes of the run's settings) left out:
    # the tests name jobs by run and step
    jobs = {
        f"{rule}[{re.sub(r', key=[0-9a-f]{8}', '', line)}]" if line else rule
        for rule, lines in dry_run_jobs(result.stdout).items()
        for line in lines
    }
    return jobs - {"all"}


def run_jobs(run: str) -> set[str]:
    """A training run's own jobs and every job that reads its checkpoints (the default evaluates steps 0 and 150)."""
    return {
        f"train_run[run={run}]",
        f"export_hf[run={run}]",
        f"eval_bits_per_byte[model={run}]",
        f"eval_lm_eval[model={run}]",
        f"checkpoint_curves[run={run}]",
        *(f"{rule}[run={run}, step={step}]" for rule in ("checkpoint_export", "checkpoint_evaluate") for step in (0, 150)),
    }


def lm_eval_jobs(run: str) -> set[str]:
    """The jobs that run the lm-eval tasks on a run's checkpoints (final and intermediate) and the curves drawn from them.

    An intermediate checkpoint's export is deleted once evaluated (temp()), so evaluating it again exports it again.
    """
    return {
        f"eval_lm_eval[model={run}]",
        f"checkpoint_curves[run={run}]",
        *(f"{rule}[run={run}, step={step}]" for rule in ("checkpoint_export", "checkpoint_evaluate") for step in (0, 150)),
    }


SUMMARIES = {"eval_summary", "eval_comparisons", "results_report"}
RUNS = ("tiny_nanochat", "tiny_neox")


def change(path: tuple, value):
    def apply(config: dict) -> dict:
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return config

    return apply


CHANGES = {
    # value changed: the jobs it must rerun (and nothing else)
    "report flag": (change(("report", "flags", "chance_stderrs"), 3.0), {"results_report"}),
    "one tokenizer's max_doc_chars": (
        change(("tokenizers", 1, "max_doc_chars"), 5000),
        {"tokenizer_train[tokenizer=sample_neox]", "tokenizer_eval[tokenizer=sample_neox]", "tokenizer_eval_summary"}
        | run_jobs("tiny_neox")
        | SUMMARIES,
    ),
    # the two runs then differ in two settings, so they are no longer a pair to compare: no comparisons job
    "one run's learning rate": (
        change(("training", "runs", 0, "learning_rate"), 2.0e-3),
        # its checks gate too: a new training key (run_params.training_key), so a gate of its own
        run_jobs("tiny_nanochat") | {"train_checks[run=tiny_nanochat]"} | (SUMMARIES - {"eval_comparisons"}),
    ),
    "the lm-eval task limit": (
        change(("evaluation", "limit"), 50),
        lm_eval_jobs("tiny_nanochat") | lm_eval_jobs("tiny_neox") | SUMMARIES,
    ),
    "the generated task's seed": (
        change(("evaluation", "next_passage", "seed"), 99),
        {"eval_next_passage_task"} | lm_eval_jobs("tiny_nanochat") | lm_eval_jobs("tiny_neox") | SUMMARIES,
    ),
    "the export tolerance": (
        change(("export", "tolerance"), 2.0e-3),
        (run_jobs("tiny_nanochat") | run_jobs("tiny_neox") | SUMMARIES) - {f"train_run[run={run}]" for run in RUNS},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("what", list(CHANGES))
def test_a_changed_value_reruns_exactly_its_dependent_jobs(default_run, what):
    root, _, result = default_run
    assert result.returncode == 0, "the default run failed (see test_default_workflow_end_to_end)"
    modify, expected = CHANGES[what]
    config = yaml.safe_load((root / "config" / "config.yaml").read_text(encoding="utf-8"))
    assert planned_jobs(root, modify(config)) == expected
