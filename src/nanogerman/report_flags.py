"""The results report's settings and sanity flags.

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
import math
from dataclasses import dataclass, field

from nanogerman.curves import MARK_OVERFIT, MARK_STALLED
from nanogerman.offline_tasks import NextPassageSpec
from nanogerman.report_data import Run, Score
from nanogerman.schema import schema_defaults
from nanogerman.selection import ConfigError

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


@dataclass(frozen=True)
class FlagSettings:
    """``report.flags``; the defaults are the schema's (:meth:`from_schema`)."""

    chance_stderrs: float
    min_loss_drop: float
    learning_rate_range: tuple[float, float]

    @classmethod
    def from_section(cls, flags: dict) -> FlagSettings:
        """From ``report.flags``, the schema's default for each key it lacks; a bad range is a one-line ConfigError."""
        values = {**schema_defaults("report", "flags"), **flags}
        low, high = values["learning_rate_range"]
        if not 0 < low < high:
            raise ConfigError(
                f"config error: report.flags.learning_rate_range is {[low, high]!r}; expected [low, high] with 0 < low < high"
            )
        return cls(float(values["chance_stderrs"]), float(values["min_loss_drop"]), (float(low), float(high)))

    @classmethod
    def from_schema(cls, **changes: float | tuple[float, float]) -> FlagSettings:
        """The schema's defaults, with ``changes`` on top (tests); an unknown change is a TypeError."""
        return dataclasses.replace(cls.from_section({}), **changes)


@dataclass(frozen=True)
class ReportSettings:
    tasks: tuple[str, ...] | None = None  # only these tasks, in this order (report.tasks)
    task_order: tuple[str, ...] = ()  # these first (the evaluation stage's tasks), then any other task found
    average_tasks: tuple[str, ...] | None = None  # None: every task in the columns
    chance: dict = field(default_factory=lambda: dict(DEFAULT_CHANCE))
    flags: FlagSettings = field(default_factory=FlagSettings.from_schema)

    @classmethod
    def from_config(cls, config: dict) -> ReportSettings:
        """The ``report`` section (schema defaults filled in or not) and the evaluation stage's task names."""
        section = config.get("report") or {}
        flags = FlagSettings.from_section(section.get("flags") or {})
        tasks = section.get("tasks")
        averaged = section.get("average_tasks")
        return cls(
            tasks=None if tasks is None else tuple(tasks),
            task_order=tuple(evaluation_tasks(config)),
            average_tasks=None if averaged is None else tuple(averaged),
            chance={**DEFAULT_CHANCE, **(section.get("chance") or {})},
            flags=flags,
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


def format_learning_rate(value: float) -> str:
    return f"{value:.1e}"
