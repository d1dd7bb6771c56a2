"""The whole workflow on the embedded default config, as README command 1 runs it."""

from __future__ import annotations

import json
import os

import pytest

SENTINEL = "hf_SENTINEL_c0ffee_not_a_real_token"  # an HF_TOKEN that must reach no file
# ' #' would start a YAML comment and ': ' a mapping in MaxText's own config parser (OmegaConf): paths must survive both
RESULTS_DIR = "res #1: x"


@pytest.mark.slow
def test_default_workflow_end_to_end(tmp_path, base_config, snakemake_run):
    base_config["results_dir"] = RESULTS_DIR
    result = snakemake_run(tmp_path, base_config, env={"HF_TOKEN": SENTINEL, "HUGGING_FACE_HUB_TOKEN": SENTINEL})
    assert result.returncode == 0, result.stderr[-3000:]
    results = tmp_path / RESULTS_DIR
    corpus = json.loads((results / "corpus" / "corpus.json").read_text())
    assert corpus["shard_sets"]["train"]["shards"] == 4
    train = json.loads((results / "train" / "tiny_neox" / "train.json").read_text())
    arguments = dict(argument.split("=", 1) for argument in train["maxtext_args"][1:])
    assert arguments["base_output_directory"] == json.dumps(str(results / "checkpoints"))  # quoted for OmegaConf
    assert not (tmp_path / "res").exists()  # nothing written where a path cut at ' #' would point
    assert_no_secret_on_disk(results, SENTINEL)
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
        assert not (results / "checkpoint_eval" / run / "step_150" / "hf").exists()  # intermediate exports deleted
    overview = (results / "report" / "overview.md").read_text()
    assert "worse than uniform" not in overview and "overfitting" not in overview and "no improvement" not in overview
    again = snakemake_run(tmp_path, base_config, "-n")
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
