"""Every config in config/ plans from the repository root, with and without the tpu profile, as a user types it.

These tests run ``snakemake -n`` with the repository root as the working directory and
no ``--directory``: the Snakefile's embedded default (``config/config.yaml``) is then
visible, exactly as for a user. A config file named with ``--configfile`` must replace
that default, not be merged over it.
"""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO, copy_workflow, snakemake_at_root

CONFIGS = sorted(path.name for path in (REPO / "config").glob("*.yaml") if path.name != "schema.yaml")
PROFILES = [None, "profiles/local", "profiles/tpu"]


def planned_jobs(output: str) -> dict[str, int]:
    """The job counts of a dry run's summary table (rule name, count)."""
    counts = {}
    for line in output.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


SCENARIOS = sorted(path.name for path in (REPO / ".test").glob("*.yaml"))


def test_every_config_file_is_covered():
    assert {"config.yaml", "nano-german.yaml"} <= set(CONFIGS)
    assert {"gcs-source.yaml", "tpu.yaml"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_static_scenario_plans_from_the_repository_root(scenario):
    """.test/: a gs:// corpus source and a tpu run set, each dry-run as a user types it."""
    result = snakemake_at_root(REPO, "-n", f"--configfile=.test/{scenario}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    config = yaml.safe_load((REPO / ".test" / scenario).read_text(encoding="utf-8"))
    jobs = planned_jobs(output)
    assert jobs.get("corpus_shard") == 5 and jobs.get("train_run") == len(config["training"]["runs"]), output[-3000:]
    if config["training"].get("backend") == "tpu":
        assert jobs.get("train_fit") == len(config["training"]["runs"]), output[-3000:]


# The embedded default names no Google Cloud project: with the tpu profile it stops with one line (tested below).
CASES = [(name, profile) for name in CONFIGS for profile in PROFILES if (name, profile) != ("config.yaml", "profiles/tpu")]


@pytest.mark.parametrize(("config_name", "profile"), CASES)
def test_config_plans_from_the_repository_root(config_name, profile):
    args = ["-n"]
    if profile:
        args += ["--profile", profile]
    if config_name != "config.yaml":
        args.append(f"--configfile=config/{config_name}")
    result = snakemake_at_root(REPO, *args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    config = yaml.safe_load((REPO / "config" / config_name).read_text(encoding="utf-8"))
    jobs = planned_jobs(output)
    assert jobs.get("train_run") == len(config["training"]["runs"]), output[-3000:]
    if profile == "profiles/tpu":
        assert jobs.get("train_fit") == len(config["training"]["runs"]), output[-3000:]


def test_the_embedded_default_on_the_tpu_profile_names_the_missing_key():
    result = snakemake_at_root(REPO, "-n", "--profile", "profiles/tpu")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "config error: training.runs[0] (tiny_nanochat) runs on the tpu backend but training.tpu.project is not set"
    )


def test_seed_config_plans_all_its_shards_from_the_root():
    result = snakemake_at_root(REPO, "-n", "--configfile=config/nano-german.yaml")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert planned_jobs(output)["corpus_shard"] == 241  # shards 0-239 for training plus 240 held out
    jobs = planned_jobs(output)
    # Contamination: one job per training shard, one merge, one per task (the suites' ten, arc_de_fixed, next_passage_de).
    assert (jobs["contamination_shard"], jobs["contamination_merge"], jobs["contamination_task"]) == (240, 1, 11)


def test_a_config_file_on_the_command_line_replaces_the_embedded_default(tmp_path):
    """Break keys of config/config.yaml that the seed's config does not set: the seed's config must still plan.

    Before the fix, the command line's file was merged over config/config.yaml, so the embedded
    default's training.defaults.per_device_batch_size and these broken keys leaked into the seed's runs.
    """
    root = copy_workflow(tmp_path / "checkout")
    default_path = root / "config" / "config.yaml"
    seed = yaml.safe_load((root / "config" / "nano-german.yaml").read_text(encoding="utf-8"))
    default = yaml.safe_load(default_path.read_text(encoding="utf-8"))
    assert "flags" not in seed["report"] and "epochs" not in seed["training"]["defaults"]
    default["report"]["flags"]["chance_stderrs"] = "not a number"
    default["training"]["defaults"]["epochs"] = -5
    default_path.write_text(yaml.safe_dump(default, sort_keys=False), encoding="utf-8")

    broken = snakemake_at_root(root, "-n")
    assert broken.returncode != 0 and "config error: " in broken.stderr, broken.stderr[-2000:]

    seed_plan = snakemake_at_root(root, "-n", "--configfile=config/nano-german.yaml")
    assert seed_plan.returncode == 0, (seed_plan.stdout + seed_plan.stderr)[-3000:]
    assert planned_jobs(seed_plan.stdout)["train_run"] == len(seed["training"]["runs"])


def test_config_key_value_still_overrides_the_chosen_file():
    result = snakemake_at_root(
        REPO, "-n", "--configfile=config/nano-german.yaml", "--config", "results_dir=results/elsewhere", "--quiet", "all"
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    result = snakemake_at_root(REPO, "-n", "--configfile=config/nano-german.yaml", "--config", "results_dir=results/elsewhere")
    assert "results/elsewhere/corpus/" in result.stdout and "results/nano-german/" not in result.stdout
