"""The results report's tables: the overview, the run table and provenance, as Markdown, LaTeX,
CSV frames and one HTML page."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from nanogerman.clean_subsets import beside_their_tasks, is_clean_subset
from nanogerman.curves import MARK_OVERFIT, MARK_STALLED, MARK_UNIFORM, uniform_messages
from nanogerman.provenance import package_versions
from nanogerman.report_data import METRICS, Metric, Model, Run
from nanogerman.report_flags import (
    MARK_CHANCE,
    MARK_LOSS,
    MARK_LR,
    RUN_MARKS,
    FlagSettings,
    ReportSettings,
    format_learning_rate,
    loss_drop,
    near_chance,
    run_flags,
)
from nanogerman.significance import MARK_LEAD, column_leads, lead_notes, lead_unclear
from nanogerman.tables import MISSING, Cell, Table, best_positions
from nanogerman.tokenizer_eval_summary import markdown_table as tokenizer_markdown
from nanogerman.tokenizer_eval_summary import summary_frame

# --- the overview --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    task: str
    metric: Metric
    chance: float | None
    averaged: bool

    @property
    def key(self) -> str:
        return f"{self.task}/{self.metric.key}"

    @property
    def title(self) -> str:
        return f"{self.task} {self.metric.title}"


def found_tasks(models: Iterable[Model]) -> list[str]:
    tasks: list[str] = []
    for model in models:
        tasks.extend(task for task, _ in model.scores if task not in tasks)
    return tasks


def select_columns(models: Sequence[Model], settings: ReportSettings) -> list[Column]:
    """A column per task and metric that some model has: the tasks of ``report.tasks``, else the evaluation's then the rest."""
    found = found_tasks(models)
    if settings.tasks is not None:
        tasks = list(settings.tasks)
    else:
        tasks = [task for task in settings.task_order if task in found] + [
            task for task in found if task not in settings.task_order
        ]
        tasks = beside_their_tasks(tasks)  # <task>_clean right after <task>
    columns = []
    for task in tasks:
        for metric in METRICS:
            if any((task, metric.key) in model.scores for model in models):
                every = settings.average_tasks is None and not is_clean_subset(task)  # a clean subset is not counted twice
                averaged = metric.accuracy and (every or task in (settings.average_tasks or ()))
                chance = settings.chance.get(task) if metric.accuracy else None
                columns.append(Column(task, metric, chance, averaged))
    return columns


def missing_tasks(models: Sequence[Model], settings: ReportSettings) -> list[str]:
    """Tasks named in the config for which no model has a score."""
    found = found_tasks(models)
    named = settings.tasks if settings.tasks is not None else settings.task_order
    return [task for task in named if task not in found]


def average(model: Model, columns: Sequence[Column]) -> float | None:
    """Unweighted mean of the model's averaged columns; None if it lacks any of them (or none is averaged)."""
    values = [model.scores.get((column.task, column.metric.key)) for column in columns if column.averaged]
    if not values or any(value is None for value in values):
        return None
    return sum(value.value for value in values) / len(values)


def chance_count(model: Model, columns: Sequence[Column], flags: FlagSettings) -> int:
    return sum(
        near_chance(model.scores.get((column.task, column.metric.key)), column.chance, flags.chance_stderrs) for column in columns
    )


def uniform_flags(model: Model) -> list[str]:
    """'worse than uniform' for each held-out bits-per-byte score at or above the uniform guess recorded with it."""
    values = {key: score.value for key, score in model.scores.items()}
    return uniform_messages(values, model.evaluation.get("uniform_bits_per_byte") or {})


def model_flags(model: Model, columns: Sequence[Column], flags: FlagSettings) -> list[str]:
    """Short flag messages for the overview's Flags column."""
    found = []
    count = chance_count(model, columns, flags)
    if count:
        found.append(f"{MARK_CHANCE} {count} at chance")
    found += [f"{MARK_UNIFORM} {message}" for message in uniform_flags(model)]
    if model.run is not None:
        found += [f"{RUN_MARKS[key]} {message}" for key, message in run_flags(model.run, flags).items()]
    return found


AVG_FORMAT = "{:.4f}"


def overview_table(models: Sequence[Model], columns: Sequence[Column], flags: FlagSettings) -> Table:
    """A row per model, a column per task metric (value ± stderr, best in bold, † near chance), Avg. and Flags."""
    table = Table(["Model", *(column.title for column in columns), "Avg.", "Flags"], align="l" + "r" * (len(columns) + 1) + "l")
    best = {}
    for column in columns:
        values = [_value(model, column) for model in models]
        best[column.key] = best_positions(values, higher_is_better=column.metric.higher_is_better, fmt=column.metric.format)
    leads = column_leads(models, columns)  # is the best value's lead over the second significant?
    averages = [average(model, columns) for model in models]
    best_average = best_positions(averages, higher_is_better=True, fmt=lambda value: AVG_FORMAT.format(value))
    for row, model in enumerate(models):
        cells = [Cell(model.name)]
        for column in columns:
            score = model.scores.get((column.task, column.metric.key))
            if score is None:
                cells.append(Cell(MISSING))
                continue
            cells.append(
                Cell(
                    column.metric.format(score.value),
                    bold=row in best[column.key],
                    marks=(MARK_CHANCE if near_chance(score, column.chance, flags.chance_stderrs) else "")
                    + (MARK_LEAD if row in best[column.key] and lead_unclear(leads[column.key]) else ""),
                    stderr=None if score.stderr is None else column.metric.format(score.stderr),
                )
            )
        value = averages[row]
        cells.append(Cell(MISSING if value is None else AVG_FORMAT.format(value), bold=row in best_average))
        cells.append(Cell("; ".join(model_flags(model, columns, flags))))
        table.add(cells)
    return table


def _value(model: Model, column: Column) -> float | None:
    score = model.scores.get((column.task, column.metric.key))
    return None if score is None else score.value


def overview_notes(columns: Sequence[Column], settings: ReportSettings, missing: Sequence[str]) -> list[str]:
    """The legend printed under the overview table."""
    flags = settings.flags
    averaged = [column.title for column in columns if column.averaged]
    chance = {column.task: column.chance for column in columns if column.metric.accuracy}
    chance_text = ", ".join(f"{task} {'none' if level is None else f'{level:g}'}" for task, level in chance.items())
    run_flags_note = (
        f"{MARK_LR} learning rate outside {format_learning_rate(flags.learning_rate_range[0])}–"
        f"{format_learning_rate(flags.learning_rate_range[1])}; {MARK_LOSS} loss (mean of the last logged steps) "
        f"fell less than {flags.min_loss_drop:.0%} from the first step's; {MARK_OVERFIT} validation loss rose for 3 "
        f"evaluations in a row while the training loss fell; {MARK_UNIFORM} held-out bits per byte at or above "
        "a uniform guess over the vocabulary (log2 V × tokens per byte); "
        f"{MARK_STALLED} held-out bits per byte no lower at the last evaluated checkpoint than at the first."
    )
    if not columns:
        notes = ["No evaluation results yet: the task columns appear once the evaluation stage has run.", run_flags_note]
    else:
        notes = [
            "Best value per column in **bold** (highest accuracy, lowest bits per byte); ± one standard error (lm-eval's).",
            f"{MARK_CHANCE} within {flags.chance_stderrs:g} standard errors of chance (chance: {chance_text or 'no accuracy columns'}).",
            "Avg.: unweighted mean of "
            + (", ".join(averaged) if averaged else "no column")
            + f"; {MISSING} where one of them is missing.",
            run_flags_note,
        ]
    if missing:
        notes.append("No results for: " + ", ".join(missing) + ".")
    return notes


# --- the run table -------------------------------------------------------------------------------


def format_tokens(count: int) -> str:
    """307200 -> '307.2 k', 30408704000 -> '30.41 B'."""
    for size, suffix, digits in ((1e9, "B", 2), (1e6, "M", 2), (1e3, "k", 1)):
        if count >= size:
            return f"{count / size:.{digits}f} {suffix}"
    return str(count)


def format_duration(seconds: float) -> str:
    """95.4 -> '95 s', 754 -> '12.6 min', 151200 -> '42.0 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_accelerator(run: Run) -> str:
    return run.accelerator if run.devices == 1 or "-" in run.accelerator else f"{run.accelerator} × {run.devices}"


def run_table(runs: Sequence[Run], flags: FlagSettings) -> Table:
    """A row per training run: tokenizer, learning rate, steps, batch, tokens, loss, wall time, accelerator, config hash, flags."""
    table = Table(
        [
            "Run",
            "Tokenizer",
            "Learning rate",
            "Steps",
            "Batch (seq. × tokens)",
            "Tokens seen",
            "Loss (first → final)",
            "Wall time",
            "Accelerator",
            "Config hash",
            "Flags",
        ],
        align="llrrrrrrlll",
    )
    for run in runs:
        found = run_flags(run, flags)
        table.add(
            [
                Cell(run.name),
                Cell(run.tokenizer),
                Cell(format_learning_rate(run.learning_rate), marks=MARK_LR if "lr" in found else ""),
                Cell(f"{run.steps:,}"),
                Cell(f"{run.global_batch_size:,} × {run.context:,}"),
                Cell(format_tokens(run.tokens_seen)),
                Cell(f"{run.first_loss:.3f} → {run.final_loss:.3f}", marks=MARK_LOSS if "loss" in found else ""),
                Cell(format_duration(run.wall_seconds)),
                Cell(format_accelerator(run)),
                Cell(run.config_hash[:12]),
                Cell("; ".join(found.values())),
            ]
        )
    return table


# --- provenance ----------------------------------------------------------------------------------


def format_versions(versions: dict) -> str:
    """'flax 0.12.0, jax 0.8.1, …' (sorted; packages without a version left out)."""
    return ", ".join(f"{name} {version}" for name, version in sorted(versions.items()) if version)


def model_provenance(model: Model, commit: str) -> dict:
    run = model.run
    versions = {**(run.versions if run else {}), **model.evaluation.get("versions", {})}
    return {
        "train_config_hash": run.config_hash if run else None,
        "eval_config_hash": model.evaluation.get("eval_config_hash"),
        "versions": format_versions(versions),
        "git_commit": (run.git_commit if run and run.git_commit else None) or commit,
        "model_args": model.evaluation.get("model_args"),
    }


def provenance_table(models: Sequence[Model], commit: str) -> Table:
    table = Table(["Model", "Kind", "Train config hash", "Eval config hash", "Git commit", "Versions"], align="llllll")
    for model in models:
        found = model_provenance(model, commit)
        table.add(
            [
                model.name,
                model.kind,
                (found["train_config_hash"] or MISSING)[:12],
                (found["eval_config_hash"] or MISSING)[:12],
                found["git_commit"],
                found["versions"] or MISSING,
            ]
        )
    return table


def report_versions() -> dict[str, str | None]:
    return package_versions(("nanogerman", "pandas", "matplotlib", "snakemake", "lm_eval", "transformers"))


# --- CSV frames ----------------------------------------------------------------------------------


def overview_frame(models: Sequence[Model], columns: Sequence[Column], flags: FlagSettings, commit: str):
    """The overview at full precision: value, stderr and near-chance flag per column, Avg., flags and provenance."""
    import pandas as pd

    rows = []
    for model in models:
        row: dict[str, Any] = {"model": model.name, "kind": model.kind}
        for column in columns:
            score = model.scores.get((column.task, column.metric.key))
            row[column.key] = None if score is None else score.value
            row[f"{column.key}_stderr"] = None if score is None else score.stderr
            row[f"{column.key}_near_chance"] = near_chance(score, column.chance, flags.chance_stderrs)
        row["avg"] = average(model, columns)
        row["flags"] = "; ".join(model_flags(model, columns, flags))
        row.update(model_provenance(model, commit))
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=["model", "kind"]
        + [key for column in columns for key in (column.key, f"{column.key}_stderr", f"{column.key}_near_chance")]
        + ["avg", "flags", "train_config_hash", "eval_config_hash", "versions", "git_commit", "model_args"],
    )


def runs_frame(runs: Sequence[Run], flags: FlagSettings, commit: str):
    import pandas as pd

    rows = []
    for run in runs:
        found = run_flags(run, flags)
        rows.append(
            {
                "run": run.name,
                "tokenizer": run.tokenizer,
                "learning_rate": run.learning_rate,
                "steps": run.steps,
                "global_batch_size": run.global_batch_size,
                "max_target_length": run.context,
                "tokens_seen": run.tokens_seen,
                "first_loss": run.first_loss,
                "final_loss": run.final_loss,
                "final_loss_tail_mean": run.tail_loss,
                "loss_drop": loss_drop(run),
                "wall_seconds": run.wall_seconds,
                "accelerator": run.accelerator,
                "devices": run.devices,
                "flag_learning_rate": "lr" in found,
                "flag_loss": "loss" in found,
                "overfitting_from_step": run.overfitting_from,
                "flags": "; ".join(found.values()),
                "config_hash": run.config_hash,
                "versions": format_versions(run.versions),
                "git_commit": run.git_commit or commit,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "run",
            "tokenizer",
            "learning_rate",
            "steps",
            "global_batch_size",
            "max_target_length",
            "tokens_seen",
            "first_loss",
            "final_loss",
            "final_loss_tail_mean",
            "loss_drop",
            "wall_seconds",
            "accelerator",
            "devices",
            "flag_learning_rate",
            "flag_loss",
            "overfitting_from_step",
            "flags",
            "config_hash",
            "versions",
            "git_commit",
        ],
    )


def tokenizers_frame(results: Sequence[dict], commit: str):
    """The tokenizer evaluation's summary rows with provenance: library versions, Hub commit, project commit."""
    import pandas as pd

    frame = summary_frame(list(results)) if results else pd.DataFrame(columns=["tokenizer"])
    frame["versions"] = [format_versions(result.get("versions") or {}) for result in results]
    frame["hub_commit"] = [result.get("commit") for result in results]
    frame["git_commit"] = commit
    return frame


# --- Markdown and HTML -----------------------------------------------------------------------------


def markdown_report(
    models: Sequence[Model],
    columns: Sequence[Column],
    runs: Sequence[Run],
    tokenizer_results: Sequence[dict],
    settings: ReportSettings,
    commit: str,
) -> str:
    """The whole report as one Markdown page: overview, run table, tokenizer table, provenance."""

    flags = settings.flags
    sections = ["# Results", "## Models"]
    if models:
        sections.append(overview_table(models, columns, flags).markdown())
        notes = overview_notes(columns, settings, missing_tasks(models, settings)) + lead_notes(column_leads(models, columns))
        sections.append("\n".join(f"- {note}" for note in notes))
    else:
        sections.append("No trained runs and no evaluation results.")
    sections += ["## Training runs", run_table(runs, flags).markdown() if runs else "No training runs."]
    sections.append("## Tokenizers")
    if tokenizer_results:
        sections.append("GerTokEval's metrics; best value per column in bold (lowest fertility, highest of the others).")
        sections.append(tokenizer_markdown(list(tokenizer_results)))
    else:
        sections.append("No tokenizer evaluation.")
    sections += ["## Provenance", f"Project commit: `{commit}`."]
    sections.append(provenance_table(models, commit).markdown() if models else "No models.")
    return "\n\n".join(section.rstrip("\n") for section in sections) + "\n"


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid #ccc; padding: 0.25em 0.6em; }}
th {{ border-bottom: 2px solid #555; }}
code {{ font-size: 0.9em; }}
</style></head>
<body>
{body}
</body></html>
"""


def markdown_to_html(text: str, title: str = "Results") -> str:
    """The Markdown report as a standalone HTML page (what the Snakemake report shows inline)."""
    import markdown

    return HTML_PAGE.format(title=title, body=markdown.markdown(text, extensions=["tables"]))


# --- plots ---------------------------------------------------------------------------------------
