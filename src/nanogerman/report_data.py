"""The results report's inputs: one reader per file format, and the models they make.

- :func:`read_train_manifest`: the training stage's ``train.json`` (run settings, losses,
  tokens, wall time, config hash, versions);
- :func:`read_loss_curve`: its per-step metrics JSONL (``step``, ``learning/loss``);
- :func:`read_scores`: lm-eval's results JSON (``results[task]["acc,none"]``,
  ``"acc_stderr,none"``, ``"acc_norm,none"``, ``"bits_per_byte,none"`` …, and the versions
  the evaluation stage adds under ``nanogerman.versions``); any other file in the same
  ``results`` shape (the evaluation stage's ``bits_per_byte.json``) adds scores to the same model.

:func:`assemble_models` joins runs and results into the overview's rows (:class:`Model`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanogerman import manifests
from nanogerman.errors import StageError
from nanogerman.significance import read_items
from nanogerman.tables import MISSING


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
    data = manifests.read_train_manifest(path, error=ReportError)
    try:
        return Run(
            name=data.run,
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
    except KeyError as error:  # a key of the "tokenizer" object
        raise ReportError(
            f"{path}: the training manifest's tokenizer has no {error.args[0]!r}; {manifests.rerun_hint(path)}"
        ) from None
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
