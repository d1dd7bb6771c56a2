"""Evaluation of intermediate checkpoints: which (run, step) pairs, their evaluation job, and the curves per run.

``evaluation.checkpoints`` picks steps (``every`` N steps from step 0 and/or an explicit list of
``steps``) besides the final one. Each (run, step) is exported with the logits check (the export
stage's own code) and evaluated on ``checkpoints.tasks`` (``heldout_bpb`` and/or lm-eval tasks)
in one job; the final checkpoint is the export and evaluation stage's own. Per run,
``curves.csv`` has one row per (run, step, metric) with the tokens seen up to that checkpoint,
and ``curves.svg|png`` draws each metric against tokens seen with the uniform-guess line
for bits per byte and the chance line for tasks.

MaxText saves a checkpoint every ``checkpoint_period`` steps from step 0 and at the last step,
so those are the only steps there are: anything else is refused at planning time.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from nanogerman.atomic import atomic_path, write_json
from nanogerman.config import ConfigError
from nanogerman.curves import no_improvement
from nanogerman.manifests import TrainManifest, read_train_manifest

log = logging.getLogger(__name__)

BPB_TASK = "heldout_bpb"
NEXT_PASSAGE_TASK = "next_passage_de"
CSV_COLUMNS = ("run", "step", "tokens_seen", "task", "metric", "value", "stderr", "reference", "reference_kind", "source")


def section(config: dict) -> dict:
    return ((config.get("evaluation") or {}).get("checkpoints")) or {}


def run_settings(config: dict, run: str) -> tuple[int, int]:
    """(steps, checkpoint_period) of a run, as the training stage resolves them."""
    from nanogerman.training import plan_run

    settings = plan_run(config, run).settings
    return int(settings["steps"]), int(settings["checkpoint_period"])


def saved_steps(steps: int, period: int) -> list[int]:
    """The steps MaxText saves a checkpoint at: every ``period`` steps from 0, and the last step."""
    return sorted({*range(0, steps, period), steps - 1})


def nearest_multiple(value: int, period: int) -> int:
    return max(period, period * round(value / period))


def intermediate_steps(config: dict, run: str) -> list[int]:
    """The steps of ``run`` to evaluate besides its final one; a step the run never saves is a one-line config error."""
    chosen = section(config)
    every, listed = chosen.get("every"), list(chosen.get("steps") or [])
    if not every and not listed:
        return []
    steps, period = run_settings(config, run)
    saved = saved_steps(steps, period)
    found = set()
    if every:
        if every % period:
            raise ConfigError(
                f"config error: evaluation.checkpoints.every is {every}, not a multiple of run {run}'s checkpoint_period "
                f"{period}; use {nearest_multiple(every, period)}"
            )
        found.update(range(0, steps - 1, every))
    for step in listed:
        if step not in saved:
            shown = ", ".join(map(str, saved)) if len(saved) <= 12 else ", ".join(map(str, saved[:6])) + ", …, " + str(saved[-1])
            raise ConfigError(
                f"config error: evaluation.checkpoints.steps has {step}, a step run {run} never saves; its checkpoints: {shown}"
            )
        found.add(step)
    found.discard(steps - 1)  # the final checkpoint is the export stage's own
    return sorted(found)


def intermediate_tasks(config: dict) -> tuple[bool, list[str], bool]:
    """(bits per byte?, lm-eval tasks of evaluation.tasks, the generated next-passage task?) for intermediate checkpoints."""
    evaluation = config.get("evaluation") or {}
    tasks = list(section(config).get("tasks") or [])
    configured = list(evaluation.get("tasks") or [])
    next_passage = (evaluation.get("next_passage") or {}).get("enabled", False)
    for position, task in enumerate(tasks):
        known = task == BPB_TASK and (evaluation.get("bits_per_byte") or {}).get("enabled", False)
        known = known or (task == NEXT_PASSAGE_TASK and next_passage) or task in configured
        if not known:
            options = [BPB_TASK] * bool((evaluation.get("bits_per_byte") or {}).get("enabled")) + [NEXT_PASSAGE_TASK] * bool(
                next_passage
            )
            raise ConfigError(
                f"config error: evaluation.checkpoints.tasks[{position}] is {task!r}; expected one of the evaluation's tasks "
                f"({', '.join(options + configured) or 'none enabled'})"
            )
    return BPB_TASK in tasks, [task for task in tasks if task in configured], NEXT_PASSAGE_TASK in tasks


def job_params(config: dict) -> dict:
    """What a checkpoint_evaluate job reads from the config, as builtin values for its rule's ``params``.

    Only the values the job uses: a change of one reruns these jobs and no other, and a setting
    of a task the checkpoints do not run (or of bits per byte, when they do not compute it) reruns none.
    """
    from nanogerman.evaluation import EvalSettings

    bpb, tasks, next_passage = intermediate_tasks(config)
    evaluation = config["evaluation"]
    local_data = evaluation.get("local_data") or {}
    bits = evaluation["bits_per_byte"]
    return {
        "settings": EvalSettings.from_config(evaluation).as_param(),
        "bits_per_byte": {"max_documents": bits.get("max_documents"), "max_length": bits.get("max_length")} if bpb else None,
        "tasks": tasks,
        "next_passage": next_passage,
        "local_data": {task: local_data[task] for task in tasks if task in local_data},
    }


def check_checkpoint_evaluation(config: dict, runs: Sequence[str]) -> None:
    """Every evaluated run's checkpoint steps and the tasks: one-line config errors before any job runs."""
    for run in runs:
        intermediate_steps(config, run)
    if section(config).get("every") or section(config).get("steps"):
        intermediate_tasks(config)


# --- the job: one (run, step) ---------------------------------------------------------------------


def tokens_seen(records: Sequence[dict], step: int) -> int:
    """Tokens trained on up to and including ``step`` (the checkpoint at ``step`` is saved after that step's update)."""
    return int(sum(float(record.get("learning/total_weights", 0.0)) for record in records if int(record["step"]) <= step))


def evaluate_checkpoint(
    *,
    run: str,
    step: int,
    folder: str | Path,
    params: dict,
    metrics: str | Path,
    out: str | Path,
    texts: Sequence[str] = (),
    generated: Sequence[str | Path] = (),
) -> dict:
    """Bits per byte and the chosen tasks of one exported checkpoint, in lm-eval's results shape, plus tokens seen.

    ``params`` is the job's :func:`job_params`; ``texts`` are the held-out documents for bits per byte.
    """
    from nanogerman.curves import read_metrics
    from nanogerman.evaluation import EvalSettings, ModelSpec, evaluate_bits_per_byte, evaluate_lm_eval, load_lm

    bpb, tasks, next_passage = params["bits_per_byte"] is not None, params["tasks"], params["next_passage"]
    settings = EvalSettings(**params["settings"])
    spec = ModelSpec(f"{run}@{step}", str(folder), "run")
    lm = load_lm(spec, settings) if bpb else None
    results: dict = {"results": {}, "config": {}, "versions": {}, "n-shot": {}}
    with tempfile.TemporaryDirectory(prefix="nanogerman-checkpoint-") as scratch:
        if bpb:
            found = evaluate_bits_per_byte(
                spec, settings, texts, Path(scratch) / "bpb.json", max_length=params["bits_per_byte"]["max_length"], lm=lm
            )
            results["results"].update(found["results"])
            results["config"] = found["config"]
        if tasks or next_passage:
            found = evaluate_lm_eval(
                spec,
                settings,
                Path(scratch) / "lm_eval.json",
                tasks=tasks,
                generated=list(generated) if next_passage else [],
                local_data=params["local_data"],
            )
            results["results"].update(found["results"])
            results["config"] = found.get("config") or results["config"]
            results["versions"] = found.get("versions") or {}
            results["n-shot"] = found.get("n-shot") or {}
    logits_check = json.loads((Path(folder) / "logits_check.json").read_text(encoding="utf-8"))
    results["nanogerman"] = {
        "run": run,
        "step": step,
        "tokens_seen": tokens_seen(read_metrics(metrics), step),
        "checkpoint": logits_check.get("checkpoint"),
        "logits_check_max_abs_diff": logits_check["logits_check"].get("max_abs_diff"),
    }
    write_json(out, results)
    return results


# --- the curves of a run ----------------------------------------------------------------------------


def result_rows(run: str, step: int, tokens: int, results: dict, source: str, chance: dict) -> list[dict]:
    rows = []
    for task, entry in sorted((results.get("results") or {}).items()):
        for key, value in sorted(entry.items()):
            if not key.endswith(",none") or "_stderr" in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric = key.split(",", 1)[0]
            stderr = entry.get(f"{metric}_stderr,none")
            uniform = entry.get("uniform_bits_per_byte") if metric == "bits_per_byte" else None
            reference = uniform if uniform is not None else chance.get(task) if metric in ("acc", "acc_norm") else None
            rows.append(
                {
                    "run": run,
                    "step": step,
                    "tokens_seen": tokens,
                    "task": task,
                    "metric": metric,
                    "value": float(value),
                    "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                    "reference": reference,
                    "reference_kind": ("uniform" if uniform is not None else "chance") if reference is not None else None,
                    "source": source,
                }
            )
    return rows


def curve_rows(
    run: str, points: Sequence[str | Path], final: Sequence[str | Path], manifest: TrainManifest, chance: dict
) -> list[dict]:
    """One row per (run, step, metric): the intermediate checkpoints' files and the final evaluation's files."""
    rows = []
    for path in points:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        info = data["nanogerman"]
        rows += result_rows(run, int(info["step"]), int(info["tokens_seen"]), data, str(path), chance)
    final_step = int(manifest["checkpoint_step"])
    for path in final:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        rows += result_rows(run, final_step, int(manifest["tokens_seen"]), data, str(path), chance)
    return sorted(rows, key=lambda row: (row["task"], row["metric"], row["step"]))


def write_csv(rows: Sequence[dict], out: str | Path) -> None:
    with atomic_path(out) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)


def series(rows: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    found: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        found.setdefault((row["task"], row["metric"]), []).append(row)
    return {key: sorted(value, key=lambda row: row["step"]) for key, value in found.items()}


def curve_flags(rows: Sequence[dict]) -> list[str]:
    """'no improvement' when held-out bits per byte did not fall between the first and last evaluated checkpoint."""
    bpb = [(row["step"], row["value"]) for row in rows if row["metric"] == "bits_per_byte"]
    if no_improvement(bpb):
        first, last = min(bpb)[1], max(bpb)[1]
        return [f"no improvement in held-out bits per byte ({first:.3f} → {last:.3f})"]
    return []


def plot_curves(run: str, rows: Sequence[dict], folder: str | Path, name: str) -> list[Path]:
    """A panel per metric against tokens seen, with the uniform-guess or chance line; flags in the title."""
    from nanogerman.plots import pyplot, save_figure

    plt = pyplot()
    panels = series(rows)
    count = max(1, len(panels))
    figure, axes_list = plt.subplots(1, count, figsize=(4.2 * count, 3.4), squeeze=False)
    for axes, ((task, metric), points) in zip(axes_list[0], panels.items(), strict=False):
        tokens = [max(1, row["tokens_seen"]) for row in points]
        axes.plot(tokens, [row["value"] for row in points], marker="o", linewidth=1.2, label=run)
        references = {row["reference"] for row in points if row["reference"] is not None}
        for reference in references:
            kind = next(row["reference_kind"] for row in points if row["reference"] == reference)
            axes.axhline(reference, color="grey", linestyle=":", linewidth=1, label=f"{kind} {reference:.3g}")
        axes.set_xscale("log")
        axes.set_xlabel("tokens seen (log scale)")
        axes.set_title(f"{task} {metric}", fontsize=9)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7)
    if not panels:
        axes_list[0][0].axis("off")
        axes_list[0][0].text(0.5, 0.5, "no evaluated checkpoints", ha="center", va="center")
    flags = curve_flags(rows)
    figure.suptitle(f"{run}: evaluated checkpoints" + "".join(f" — {flag}" for flag in flags), fontsize=9)
    try:
        return save_figure(figure, Path(folder), name)
    finally:
        plt.close(figure)


def write_run_curves(
    *,
    run: str,
    points: Sequence[str | Path],
    final: Sequence[str | Path],
    manifest: str | Path,
    chance: dict,
    csv_out: str | Path,
    plot_out: str | Path,
) -> list[dict]:
    rows = curve_rows(run, points, final, read_train_manifest(manifest), chance)
    write_csv(rows, csv_out)
    plot_out = Path(plot_out)
    plot_curves(run, rows, plot_out.parent, plot_out.stem)
    steps = sorted({row["step"] for row in rows})
    log.info(
        "run %s: %d evaluated checkpoints (steps %s)%s",
        run,
        len(steps),
        ", ".join(map(str, steps)),
        "".join(f"; {flag}" for flag in curve_flags(rows)),
    )
    return rows
