"""Learning curves: MaxText's evaluation lines and metrics records joined per step, and the sanity flags (pure functions)."""

from __future__ import annotations

import json
import math

from nanogerman.curves import (
    EVAL_LOSS,
    LogRecorder,
    eval_curve,
    eval_summary,
    merge_metrics,
    no_improvement,
    overfitting_step,
    parse_eval_line,
    parse_train_line,
    worse_than_uniform,
)

# MaxText 0.2.5's own lines (metric_logger.py), as they reach the job's log
TRAIN_LINE = (
    "completed step: 25, seconds: 0.108, TFLOP/s/device: 0.014, Tokens/s/device: 9513.634, total_weights: 1016, "
    "loss: 7.057, lm_loss: 7.057, perplexity: 1160.000"
)
EVAL_LINE = (
    "I1130 10:24:01.728832 140030180600704 metric_logger.py:302] Completed eval after train step 75, loss=6.397, "
    "perplexity=600.097, total_weights=9951.0, avg_z_loss=0.000"
)
RUNNING_LINE = (
    "Completed eval step: 0, seconds: 90.983, running loss=6.232, running perplexity=508.771, running total_weights=1016.0"
)


def test_log_lines_parse():
    assert parse_eval_line(EVAL_LINE) == {
        "step": 75,
        EVAL_LOSS: 6.397,
        "eval/total_weights": 9951.0,
        "eval/total_loss": 6.397 * 9951.0,
    }
    assert parse_eval_line(RUNNING_LINE) is None and parse_eval_line(TRAIN_LINE) is None
    record = parse_train_line(TRAIN_LINE)
    assert record["step"] == 25 and record["learning/loss"] == 7.057 and record["learning/total_weights"] == 1016.0
    assert parse_train_line(EVAL_LINE) is None


def test_recorder_restarts_at_step_zero_and_appends_on_resume(tmp_path):
    path = tmp_path / "metrics.log.jsonl"
    path.write_text('{"step": 99, "learning/loss": 1.0}\n')  # a stale earlier attempt
    recorder = LogRecorder(path)
    for line in (TRAIN_LINE.replace("step: 25", "step: 0"), "unrelated", EVAL_LINE.replace("step 75", "step 0"), TRAIN_LINE):
        recorder(line)
    steps = [(record["step"], EVAL_LOSS in record) for record in map(json.loads, path.read_text().splitlines())]
    assert steps == [(0, False), (0, True), (25, False)]


def test_merge_puts_the_eval_loss_next_to_the_training_loss():
    log = [
        {"step": 0, "learning/loss": 8.1},
        {"step": 1, "learning/loss": 7.9},
        {"step": 1, EVAL_LOSS: 7.95, "eval/total_weights": 100.0, "eval/total_loss": 795.0},
        {"step": 2, "learning/loss": 7.5},
    ]
    # MaxText's metrics_file after an evaluation emptied it: a running record (its step is the eval batch), then later steps
    metrics_file = [
        {"step": 0, EVAL_LOSS: 7.96, "eval/step_time_seconds": 0.1},
        {"step": 2, "learning/loss": 7.5123, "learning/current_learning_rate": 1e-3},
    ]
    records = merge_metrics(log, metrics_file)
    assert [record["step"] for record in records] == [0, 1, 2]
    assert EVAL_LOSS not in records[0] and records[1][EVAL_LOSS] == 7.95
    assert records[2]["learning/loss"] == 7.5123 and records[2]["learning/current_learning_rate"] == 1e-3
    assert eval_curve(records) == [(1, 7.95)]


def synthetic_run(eval_losses, train_start=8.0, train_drop=0.05, every=10):
    """Records of a run whose training loss falls steadily and whose validation loss follows ``eval_losses``."""
    records = []
    for step in range(every * (len(eval_losses) - 1) + 1):
        record = {"step": step, "learning/loss": train_start - train_drop * step}
        if step % every == 0:
            record[EVAL_LOSS] = eval_losses[step // every]
        records.append(record)
    return records


def test_overfitting_flag_fires_when_validation_loss_rises_while_training_loss_falls():
    memorizing = synthetic_run([7.6, 6.5, 6.0, 5.9, 6.1, 6.4, 6.9, 7.5])
    assert overfitting_step(memorizing) == 30  # the last evaluation before three rises in a row
    assert eval_summary(memorizing)["overfitting_from_step"] == 30


def test_overfitting_flag_is_quiet_on_a_healthy_or_noisy_run():
    assert overfitting_step(synthetic_run([7.6, 6.5, 6.0, 5.8, 5.7, 5.65, 5.6])) is None
    assert overfitting_step(synthetic_run([7.6, 6.5, 6.6, 6.2, 6.3, 6.0, 6.1])) is None  # single bumps are noise
    # both losses rising (divergence, not overfitting) is not this flag
    diverging = synthetic_run([6.0, 6.2, 6.5, 6.9, 7.4], train_drop=-0.05)
    assert overfitting_step(diverging) is None
    assert eval_summary([{"step": 0, "learning/loss": 8.0}]) == {"evaluations": 0}


def test_no_improvement_from_the_checkpoint_curves(tmp_path):
    from nanogerman.checkpoint_eval import result_rows, write_csv
    from nanogerman.curves import no_improvement_message

    def curve(run, values):
        rows = [
            row
            for step, value in values
            for row in result_rows(
                run,
                step,
                step * 1024,
                {
                    "results": {
                        "heldout_bpb": {"bits_per_byte,none": value, "uniform_bits_per_byte": 3.78},
                        "next_passage_de": {"acc,none": 0.2},
                    }
                },
                "x.json",
                {"next_passage_de": 0.25},
            )
        ]
        write_csv(rows, tmp_path / f"{run}.csv")
        return tmp_path / f"{run}.csv"

    paths = [curve("stuck", [(0, 3.80), (150, 3.70), (299, 3.85)]), curve("learning", [(0, 3.80), (150, 3.2), (299, 3.0)])]
    assert no_improvement_message(paths) == {"stuck": "no improvement in held-out bits per byte (3.800 → 3.850)"}


def test_uniform_and_no_improvement_flags():
    uniform = math.log2(2048) * 0.34
    assert worse_than_uniform(3.89, uniform) and worse_than_uniform(uniform, uniform)
    assert not worse_than_uniform(0.8 * uniform, uniform) and not worse_than_uniform(None, uniform)
    assert no_improvement([(100, 3.5), (0, 3.4)]) and no_improvement([(0, 3.4), (100, 3.4)])
    assert not no_improvement([(0, 3.9), (50, 3.95), (100, 3.1)]) and not no_improvement([(0, 3.9)])
