"""Results report: the seed's overview table built from the workflow's own result files.

Inputs, each read by one small function (adapt a changed key there):

- :func:`read_train_manifest`: the training stage's ``train.json`` (run settings, losses,
  tokens, wall time, config hash, versions);
- :func:`read_loss_curve`: its per-step metrics JSONL (``step``, ``learning/loss``);
- :func:`read_scores`: lm-eval's results JSON (``results[task]["acc,none"]``,
  ``"acc_stderr,none"``, ``"acc_norm,none"``, ``"bits_per_byte,none"`` …, and the versions
  the evaluation stage adds under ``nanogerman.versions``); any other file in the same
  ``results`` shape (the evaluation stage's ``bits_per_byte.json``) adds scores to the same model;
- the tokenizer evaluation's per-tokenizer JSON, through :mod:`nanogerman.tokenizer_eval_summary`.

Outputs: the overview (a row per model, a column per task metric, Avg., flags), the run
table and the tokenizer table as Markdown, CSV and LaTeX, an HTML page of the Markdown for
the Snakemake report, plots (SVG and PNG) and ``provenance.json``.

Sanity flags (:class:`FlagSettings`): † a score within ``chance_stderrs`` standard errors
of the task's chance level; ‡ a run whose loss (mean of its last logged steps) fell by less
than ``min_loss_drop`` of its first loss; § a learning rate outside
``learning_rate_range``.

Chance levels (:data:`DEFAULT_CHANCE`, overridable per task in ``report.chance``): 0.25 for
the 4-way tasks (the seed's arc_de, hellaswag_de, m_mmlu_de and the generated next_passage_de). truthfulqa_de_mc1 gives one true answer among four to five false ones
(Lin et al., TruthfulQA), so a uniform guess scores 1/6 to 1/5: 0.2, the upper end, so
that a score at chance is not taken for one above it. truthfulqa_de_mc2 has none: it is
the normalized probability mass on the true answers, from summed (not length-normalized)
log-likelihoods, so what an untrained model scores depends on the answers' lengths and
on the share of true answers per question, which the German data sets; set a measured
value (e.g. an untrained model's score) in ``report.chance`` to draw and flag it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nanogerman.atomic import atomic_path, write_json
from nanogerman.clean_subsets import beside_their_tasks, is_clean_subset
from nanogerman.curves import (
    MARK_OVERFIT,
    MARK_STALLED,
    MARK_UNIFORM,
    eval_curve,
    no_improvement_message,
    overfitting_step,
    read_metrics,
    uniform_messages,
)
from nanogerman.errors import StageError
from nanogerman.offline_tasks import NextPassageSpec
from nanogerman.provenance import file_sha256, git_commit, package_versions
from nanogerman.selection import ConfigError
from nanogerman.significance import MARK_LEAD, column_leads, lead_notes, lead_unclear, read_items
from nanogerman.tables import MISSING, Cell, Table, best_positions
from nanogerman.tokenizer_eval import METRICS as TOKENIZER_METRICS
from nanogerman.tokenizer_eval_summary import latex_table as tokenizer_latex
from nanogerman.tokenizer_eval_summary import load_results, plot_metric, summary_frame
from nanogerman.tokenizer_eval_summary import markdown_table as tokenizer_markdown

log = logging.getLogger(__name__)


DEFAULT_CHANCE: dict[str, float | None] = {
    "arc_de": 0.25,
    "hellaswag_de": 0.25,
    "m_mmlu_de": 0.25,
    "truthfulqa_de_mc1": 0.2,
    "truthfulqa_de_mc2": None,
    NextPassageSpec.task: 1 / NextPassageSpec.choices,  # the generated next-passage task (4-way)
}
MARK_CHANCE, MARK_LOSS, MARK_LR = "†", "‡", "§"
RUN_MARKS = {"lr": MARK_LR, "loss": MARK_LOSS, "overfit": MARK_OVERFIT, "stalled": MARK_STALLED}


class ReportError(StageError):
    """A result file the report reads is missing or not in the expected format."""


# --- scores, runs, models ------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str  # lm-eval's metric name ("acc" in "acc,none")
    title: str
    higher_is_better: bool
    accuracy: bool  # a share of items right: has a chance level and enters Avg.
    fmt: str

    def format(self, value: float | None) -> str:
        return MISSING if value is None else self.fmt.format(value)


# The metrics that become columns, in column order within a task; others in the results are ignored.
METRICS = (
    Metric("acc", "acc", True, True, "{:.4f}"),
    Metric("acc_norm", "acc_norm", True, True, "{:.4f}"),
    Metric("bits_per_byte", "bits/byte", False, False, "{:.3f}"),
    Metric("perplexity", "perplexity", False, False, "{:.1f}"),  # lambada's second metric (no chance level)
    Metric("mcc", "mcc", True, False, "{:.4f}"),  # mela's Matthews correlation (chance 0, from the task; not in Avg.)
)
METRIC_BY_KEY = {metric.key: metric for metric in METRICS}


@dataclass(frozen=True)
class Score:
    value: float
    stderr: float | None = None


@dataclass(frozen=True)
class Run:
    """What the report needs from a training run's ``train.json``."""

    name: str
    tokenizer: str
    learning_rate: float
    steps: int
    global_batch_size: int
    context: int
    tokens_seen: int
    first_loss: float
    final_loss: float
    tail_loss: float  # mean of the last logged steps' losses
    wall_seconds: float
    accelerator: str
    devices: int
    config_hash: str
    versions: dict = field(default_factory=dict)
    git_commit: str | None = None  # recorded by the training stage, if it does
    overfitting_from: int | None = None  # from the validation curve in metrics.jsonl (nanogerman.curves)
    stalled: str | None = None  # "no improvement …" from its evaluated checkpoints (nanogerman.checkpoint_eval)


@dataclass
class Model:
    """One row of the overview: a trained run or a reference model, with its scores and provenance."""

    name: str
    kind: str  # "trained" or "reference"
    scores: dict[tuple[str, str], Score] = field(default_factory=dict)
    run: Run | None = None
    evaluation: dict = field(default_factory=dict)  # provenance from the results files
    items: dict = field(default_factory=dict)  # {task: per-item results}: is the best value's lead significant


# --- readers: one per input format ---------------------------------------------------------------


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ReportError(f"{path}: {what} is not valid JSON ({error})") from None


def read_train_manifest(path: str | Path) -> Run:
    """A run from the training stage's ``train.json`` (keys of ``nanogerman.training.build_manifest``)."""
    data = read_json(path, "training manifest")
    try:
        return Run(
            name=data["run"],
            tokenizer=data["tokenizer"]["name"],
            learning_rate=float(data["learning_rate"]),
            steps=int(data["steps"]),
            global_batch_size=int(data["global_batch_size"]),
            context=int(data["max_target_length"]),
            tokens_seen=int(data["tokens_seen"]),
            first_loss=float(data["first_loss"]),
            final_loss=float(data["final_loss"]),
            tail_loss=float(data.get("final_loss_mean_last_10", data["final_loss"])),
            wall_seconds=float(data["wall_seconds"]),
            accelerator=str(data["accelerator"]),
            devices=int(data.get("devices", 1)),
            config_hash=str(data["config_hash"]),
            versions=dict(data.get("versions") or {}),
            git_commit=data.get("git_commit"),
        )
    except KeyError as error:
        raise ReportError(f"{path}: no key {error.args[0]!r}; expected a train.json written by the training stage") from None
    except (TypeError, ValueError) as error:
        raise ReportError(
            f"{path}: a value has the wrong type ({error}); expected a train.json written by the training stage"
        ) from None


def read_loss_curve(path: str | Path) -> list[tuple[int, float]]:
    """(step, loss) per logged step from the training stage's metrics JSONL (``step``, ``learning/loss``)."""
    from nanogerman.metrics import dedupe_steps, read_jsonl

    if not Path(path).is_file():
        raise ReportError(f"{path}: training metrics not found")
    return [
        (record["step"], float(record["learning/loss"])) for record in dedupe_steps(read_jsonl(path)) if "learning/loss" in record
    ]


def read_scores(path: str | Path) -> tuple[dict[tuple[str, str], Score], dict]:
    """Scores and provenance from lm-eval's results JSON: ``results[task]["<metric>,none"]`` and ``"<metric>_stderr,none"``."""
    data = read_json(path, "evaluation results")
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        raise ReportError(f"{path}: no 'results' object; expected lm-eval's results JSON")
    scores = {}
    for task, entry in results.items():
        for metric in METRICS:
            value = entry.get(f"{metric.key},none") if isinstance(entry, dict) else None
            if _is_number(value):
                stderr = entry.get(f"{metric.key}_stderr,none")  # lm-eval writes "N/A" where it has none
                scores[(task, metric.key)] = Score(float(value), float(stderr) if _is_number(stderr) else None)
    config = data.get("config") or {}
    recorded = (data.get("nanogerman") or {}).get("versions") or {}  # what the evaluation stage adds
    provenance = {
        "model_args": config.get("model_args"),
        "eval_config_hash": eval_config_hash(data) if config else None,
        "eval_git_hash": data.get("git_hash"),
        "uniform_bits_per_byte": {
            task: entry["uniform_bits_per_byte"]
            for task, entry in results.items()
            if isinstance(entry, dict) and _is_number(entry.get("uniform_bits_per_byte"))
        }
        or None,
        "versions": {
            **{name: version for name, version in recorded.items() if version},
            **{
                name: data[key]
                for name, key in (("lm_eval", "lm_eval_version"), ("transformers", "transformers_version"))
                if data.get(key)
            },
        },
    }
    return scores, provenance


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def eval_config_hash(data: dict) -> str:
    """sha256 of what decides an lm-eval result: model and its arguments, limit, seeds, shots and task versions."""
    config = data.get("config") or {}
    kept = (
        "model",
        "model_args",
        "limit",
        "bootstrap_iters",
        "gen_kwargs",
        "random_seed",
        "numpy_seed",
        "torch_seed",
        "fewshot_seed",
    )
    payload = {"config": {key: config.get(key) for key in kept}, "n-shot": data.get("n-shot"), "versions": data.get("versions")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def assemble_models(runs: Sequence[Run], evaluations: dict[str, Sequence[str | Path]]) -> list[Model]:
    """Reference models (evaluated, not trained here) first, in the given order, then the runs in theirs.

    ``evaluations`` maps a model name to its results files; a name equal to a run's is that run's model.
    """
    run_names = {run.name for run in runs}
    models = {run.name: Model(run.name, "trained", run=run) for run in runs}
    for name in evaluations:
        if name not in run_names:
            models[name] = Model(name, "reference")
    for name, paths in evaluations.items():
        for path in paths:
            scores, provenance = read_scores(path)
            models[name].scores.update(scores)
            models[name].items.update(read_items(path))
            for key, value in provenance.items():
                if key == "versions":
                    models[name].evaluation.setdefault("versions", {}).update(value)
                elif value is not None:
                    models[name].evaluation.setdefault(key, value)
    references = [models[name] for name in evaluations if name not in run_names]
    return references + [models[run.name] for run in runs]


# --- settings and flags ------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagSettings:
    chance_stderrs: float = 2.0
    min_loss_drop: float = 0.1
    learning_rate_range: tuple[float, float] = (1e-4, 1e-2)


@dataclass(frozen=True)
class ReportSettings:
    tasks: tuple[str, ...] | None = None  # only these tasks, in this order (report.tasks)
    task_order: tuple[str, ...] = ()  # these first (the evaluation stage's tasks), then any other task found
    average_tasks: tuple[str, ...] | None = None  # None: every task in the columns
    chance: dict = field(default_factory=lambda: dict(DEFAULT_CHANCE))
    flags: FlagSettings = FlagSettings()

    @classmethod
    def from_config(cls, config: dict) -> ReportSettings:
        """The ``report`` section (schema defaults filled in or not) and the evaluation stage's task names."""
        section = config.get("report") or {}
        flags = section.get("flags") or {}
        low, high = flags.get("learning_rate_range", FlagSettings.learning_rate_range)
        if not 0 < low < high:
            raise ConfigError(
                f"config error: report.flags.learning_rate_range is {[low, high]!r}; expected [low, high] with 0 < low < high"
            )
        tasks = section.get("tasks")
        averaged = section.get("average_tasks")
        return cls(
            tasks=None if tasks is None else tuple(tasks),
            task_order=tuple(evaluation_tasks(config)),
            average_tasks=None if averaged is None else tuple(averaged),
            chance={**DEFAULT_CHANCE, **(section.get("chance") or {})},
            flags=FlagSettings(
                chance_stderrs=float(flags.get("chance_stderrs", FlagSettings.chance_stderrs)),
                min_loss_drop=float(flags.get("min_loss_drop", FlagSettings.min_loss_drop)),
                learning_rate_range=(float(low), float(high)),
            ),
        )

    def as_param(self) -> dict:
        """These settings as builtins, for a rule's ``params``: Snakemake sees a change in a dict, not in an object."""
        return dataclasses.asdict(self)

    @classmethod
    def from_param(cls, value: dict) -> ReportSettings:
        """The inverse of :meth:`as_param`."""
        value = dict(value)
        flags = dict(value.pop("flags"))
        flags["learning_rate_range"] = tuple(flags["learning_rate_range"])
        optional = {key: None if value[key] is None else tuple(value[key]) for key in ("tasks", "average_tasks")}
        return cls(**{**value, **optional, "task_order": tuple(value["task_order"]), "flags": FlagSettings(**flags)})


def evaluation_tasks(config: dict) -> list[str]:
    """Task names the evaluation stage's config lists (``evaluation.tasks``: names, or entries with ``name``/``task``)."""
    section = config.get("evaluation") or {}
    suites = section.get("suites") or {}
    tasks = [task for suite in section.get("run_suites") or [] for task in suites.get(suite) or []] + list(
        section.get("tasks") or []
    )
    names = []
    for entry in tasks if isinstance(tasks, list) else []:
        name = entry if isinstance(entry, str) else (entry.get("name") or entry.get("task")) if isinstance(entry, dict) else None
        if isinstance(name, str):
            names.append(name)
    return names


def near_chance(score: Score | None, chance: float | None, stderrs: float) -> bool:
    """True when ``score`` lies within ``stderrs`` standard errors of ``chance`` (never without a stderr or chance)."""
    if score is None or chance is None or score.stderr is None:
        return False
    return abs(score.value - chance) <= stderrs * score.stderr


def loss_drop(run: Run) -> float | None:
    """How much the loss fell, as a share of the first step's loss (None if either loss is not finite)."""
    if not (math.isfinite(run.first_loss) and math.isfinite(run.tail_loss)) or run.first_loss <= 0:
        return None
    return (run.first_loss - run.tail_loss) / run.first_loss


def run_flags(run: Run, flags: FlagSettings) -> dict[str, str]:
    """The run's sanity flags: ``lr`` and ``loss``, each with a short message."""
    found = {}
    low, high = flags.learning_rate_range
    if not low <= run.learning_rate <= high:
        found["lr"] = f"learning rate {format_learning_rate(run.learning_rate)}"
    drop = loss_drop(run)
    if drop is None:
        found["loss"] = "loss not finite"
    elif drop < flags.min_loss_drop:
        found["loss"] = f"loss fell {drop:.1%}"
    if run.overfitting_from is not None:
        found["overfit"] = f"overfitting from step {run.overfitting_from}"
    if run.stalled:
        found["stalled"] = run.stalled
    return found


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


def format_learning_rate(value: float) -> str:
    return f"{value:.1e}"


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


def plot_placeholder(folder: str | Path, name: str, message: str) -> list[Path]:
    """A figure that says why there is nothing to plot (the outputs exist either way)."""
    from nanogerman.plots import pyplot, save_figure

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5, 1.5))
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center")
    try:
        return save_figure(figure, Path(folder), name)
    finally:
        plt.close(figure)


def plot_loss_curves(
    runs: Sequence[Run],
    curves: Sequence[Sequence[tuple[int, float]]],
    flags: FlagSettings,
    folder: str | Path,
    name: str = "loss_curves",
    eval_curves: Sequence[Sequence[tuple[int, float]]] | None = None,
) -> list[Path]:
    """Every run's training loss (solid) and validation loss (dashed, same colour) on one chart, steps on a log scale; flags in the legend."""
    from nanogerman.plots import pyplot, save_figure

    if not any(curves):
        return plot_placeholder(folder, name, "no training runs")
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.2))
    eval_curves = eval_curves or [[] for _ in runs]
    for run, curve, validation in zip(runs, curves, eval_curves, strict=False):
        if not curve:
            continue
        found = run_flags(run, flags)
        label = run.name + "".join(f" {RUN_MARKS[key]} {message}" for key, message in found.items())
        (line,) = axes.plot([step + 1 for step, _ in curve], [loss for _, loss in curve], label=label, linewidth=1.2)
        if validation:
            axes.plot(
                [step + 1 for step, _ in validation],
                [loss for _, loss in validation],
                linestyle="--",
                marker="o",
                markersize=3,
                color=line.get_color(),
                linewidth=1.2,
                label=f"{run.name} validation",
            )
    axes.set_xscale("log")
    axes.set_xlabel("training step + 1 (log scale)")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title("Training loss (solid) and validation loss (dashed) of every run", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    try:
        return save_figure(figure, Path(folder), name)
    finally:
        plt.close(figure)


def plot_tasks(
    models: Sequence[Model], columns: Sequence[Column], flags: FlagSettings, folder: str | Path, name: str = "tasks"
) -> list[Path]:
    """A panel per task metric, a bar per model, whiskers of ± chance_stderrs standard errors, the chance level dashed.

    Bars within that many standard errors of chance are hatched and marked †; the best bar is orange.
    """
    from nanogerman.plots import pyplot, save_figure

    if not columns:
        return plot_placeholder(folder, name, "no evaluation results")
    plt = pyplot()
    per_row = min(4, len(columns))
    rows = math.ceil(len(columns) / per_row)
    width = max(3.0, 0.55 * len(models) + 1.6)
    figure, grid = plt.subplots(rows, per_row, figsize=(width * per_row, 3.6 * rows), squeeze=False)
    k = flags.chance_stderrs
    for panel, column in zip(grid.flat, columns, strict=False):
        scores = [model.scores.get((column.task, column.metric.key)) for model in models]
        values = [None if score is None else score.value for score in scores]
        best = best_positions(values, higher_is_better=column.metric.higher_is_better, fmt=column.metric.format)
        flagged = [near_chance(score, column.chance, k) for score in scores]
        heights = [math.nan if value is None else value for value in values]
        errors = [0.0 if score is None or score.stderr is None else k * score.stderr for score in scores]
        colors = ["tab:orange" if position in best else "tab:blue" for position in range(len(models))]
        bars = panel.bar(
            range(len(models)), heights, yerr=errors, capsize=3, color=colors, hatch=None, edgecolor="black", linewidth=0.5
        )
        for bar, flag in zip(bars, flagged, strict=False):
            if flag:
                bar.set_hatch("//")
                bar.set_alpha(0.6)
        labels = [
            MISSING if value is None else column.metric.format(value) + (MARK_CHANCE if flag else "")
            for value, flag in zip(values, flagged, strict=False)
        ]
        panel.bar_label(bars, labels=labels, fontsize=7, padding=2)
        if column.chance is not None:
            panel.axhline(column.chance, color="tab:red", linestyle="--", linewidth=1, label=f"chance {column.chance:g}")
            panel.legend(fontsize=7, loc="lower right")
        panel.set_xticks(range(len(models)), [model.name for model in models], rotation=30, ha="right", fontsize=8)
        panel.set_title(column.title, fontsize=9)
        panel.margins(y=0.2)
    for panel in list(grid.flat)[len(columns) :]:
        panel.axis("off")
    figure.suptitle(
        f"Whiskers: ± {k:g} standard errors. Hatched bars ({MARK_CHANCE}): within {k:g} standard errors of chance "
        "(dashed line). Orange: best.",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    try:
        return save_figure(figure, Path(folder), name)
    finally:
        plt.close(figure)


def plot_tokenizers(results: Sequence[dict], folder: str | Path) -> list[Path]:
    """The tokenizer evaluation's bar chart per GerTokEval metric (``tokenizer_eval_summary.plot_metric``), in ``folder``."""

    written = []
    for metric in TOKENIZER_METRICS:
        if results:
            written += plot_metric(list(results), metric.key, folder)
        else:
            written += plot_placeholder(folder, metric.key, "no tokenizer evaluation")
    return written


def tokenizer_plot_names() -> list[str]:

    return [metric.key for metric in TOKENIZER_METRICS]


# --- the whole report ----------------------------------------------------------------------------


OUTPUT_KEYS = (
    "overview_md",
    "overview_csv",
    "overview_tex",
    "overview_html",
    "runs_csv",
    "runs_tex",
    "tokenizers_csv",
    "tokenizers_tex",
    "provenance",
)


def write_text(destination: str | Path, text: str) -> None:
    with atomic_path(destination) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_csv(destination: str | Path, frame) -> None:
    with atomic_path(destination) as temporary:
        frame.to_csv(temporary, index=False)


def write_report(
    *,
    runs: Sequence[str | Path],
    curves: Sequence[str | Path],
    evaluations: dict[str, Sequence[str | Path]],
    tokenizers: Sequence[str | Path],
    settings: ReportSettings,
    checkpoint_curves: Sequence[str | Path] = (),
    outputs: dict[str, str | Path],
    plots_dir: str | Path,
    commit: str | None = None,
    contamination: Sequence[str | Path] = (),
) -> dict:
    """Read every input, write every table, page and plot; returns the provenance record."""

    if len(runs) != len(curves):
        raise ReportError(f"report: {len(runs)} training manifests but {len(curves)} metrics files")
    missing = [key for key in OUTPUT_KEYS if key not in outputs]
    if missing:
        raise ValueError(f"write_report: outputs lacks {', '.join(missing)}")
    commit = commit or git_commit()
    run_list = [read_train_manifest(path) for path in runs]
    curve_list = [read_loss_curve(path) for path in curves]
    metrics = [read_metrics(path) for path in curves]
    stalled = no_improvement_message(checkpoint_curves)
    run_list = [
        replace(run, overfitting_from=overfitting_step(records), stalled=stalled.get(run.name))
        for run, records in zip(run_list, metrics, strict=False)
    ]
    models = assemble_models(run_list, evaluations)
    from nanogerman.contamination import contamination_section
    from nanogerman.suites import recorded_chances, task_notes

    settings = replace(
        settings,
        chance={
            **recorded_chances(path for paths in evaluations.values() for path in paths if str(path).endswith("lm_eval.json")),
            **settings.chance,
        },
    )
    columns = select_columns(models, settings)
    for path in tokenizers:
        read_json(path, "tokenizer evaluation result")  # one-line error for a missing or broken file
    tokenizer_results = load_results(tokenizers)
    flags = settings.flags

    page = markdown_report(models, columns, run_list, tokenizer_results, settings, commit)
    page += "".join(f"\n{note}\n" for note in task_notes([column.task for column in columns])) + contamination_section(
        contamination, found_tasks(models)
    )
    write_text(outputs["overview_md"], page)
    write_text(outputs["overview_html"], markdown_to_html(page))
    write_csv(outputs["overview_csv"], overview_frame(models, columns, flags, commit))
    write_text(outputs["overview_tex"], overview_table(models, columns, flags).latex())
    write_csv(outputs["runs_csv"], runs_frame(run_list, flags, commit))
    write_text(outputs["runs_tex"], run_table(run_list, flags).latex())
    write_csv(outputs["tokenizers_csv"], tokenizers_frame(tokenizer_results, commit))
    write_text(
        outputs["tokenizers_tex"], tokenizer_latex(tokenizer_results) if tokenizer_results else "% no tokenizer evaluation\n"
    )

    plots = Path(plots_dir)
    plot_loss_curves(run_list, curve_list, flags, plots, eval_curves=[eval_curve(records) for records in metrics])
    plot_tasks(models, columns, flags, plots)
    plot_tokenizers(tokenizer_results, plots / "tokenizers")

    inputs = [
        *runs,
        *curves,
        *(path for paths in evaluations.values() for path in paths),
        *tokenizers,
        *contamination,
        *checkpoint_curves,
    ]
    record = {
        "git_commit": commit,
        "versions": report_versions(),
        "inputs": {str(path): file_sha256(path) for path in inputs},
        "models": {model.name: {"kind": model.kind, **model_provenance(model, commit)} for model in models},
        "settings": {
            "columns": [column.key for column in columns],
            "averaged": [column.key for column in columns if column.averaged],
            "chance": {column.key: column.chance for column in columns if column.metric.accuracy},
            "flags": {
                "chance_stderrs": flags.chance_stderrs,
                "min_loss_drop": flags.min_loss_drop,
                "learning_rate_range": list(flags.learning_rate_range),
            },
        },
    }
    write_json(outputs["provenance"], record)
    flagged = sum(bool(model_flags(model, columns, flags)) for model in models)
    log.info(
        "report: %d models, %d columns, %d runs, %d tokenizers; %d models flagged",
        len(models),
        len(columns),
        len(run_list),
        len(tokenizer_results),
        flagged,
    )
    return record
