"""One training job, shared by both backends: the plan, its inputs, MaxText's arguments, the child process, the manifest.

:mod:`nanogerman.training` plans runs from the config and runs the local backend;
:mod:`nanogerman.tpu_run` runs the same job on Cloud TPU. Both build the job with
:func:`prepare_job` (the ``run_name`` hash and MaxText's ``key=value`` arguments), stream
MaxText's output through a :class:`LineTail`, report a :class:`BackendResult`, and
:func:`nanogerman.training.train_run` finishes with :func:`build_manifest` (``train.json``).
This module imports neither backend.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import re
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanogerman.errors import StageError
from nanogerman.manifests import read_dataset_manifest, read_tokenizer_stats
from nanogerman.maxtext_values import maxtext_arg
from nanogerman.provenance import file_sha256, git_commit, package_versions

log = logging.getLogger(__name__)
maxtext_log = logging.getLogger("maxtext")

TRAIN_MODULE = "maxtext.trainers.pre_train.train"
# MaxText arguments that do not change the trained weights: left out of the config hash.
NOT_HASHED = frozenset(
    {
        "run_name",
        "base_output_directory",
        "metrics_file",
        "checkpoint_period",
        "async_checkpointing",
        "enable_checkpointing",
        "eval_interval",
        "eval_steps",
        "tokenizer_path",
        "dataset_path",
        "hardware",
        "skip_jax_distributed_system",
        "enable_tensorboard",
        "grain_train_files",
        "grain_eval_files",
    }
)
VERSIONED_PACKAGES = ("maxtext", "jax", "jaxlib", "flax", "orbax-checkpoint", "tensorflow-datasets", "transformers")

# MaxText's line for a synchronous save, or for the start of an asynchronous one (async_checkpointing);
# MaxText waits for a started save before it exits 0, so after a clean exit the last one named is committed
CHECKPOINT_LINE = re.compile(r"(?:Saved a checkpoint at|Started an asynchronous checkpoint save for) step (\d+)")
RESTORE_LINE = re.compile(r"restoring from this run's directory step (\d+)")
ALREADY_DONE = re.compile(r"a checkpoint already exists at step (\d+)")
ERROR_LINE = re.compile(r"\b(\w*Error|\w*Exception|StopTraining|RESOURCE_EXHAUSTED|Killed)\b")
OUT_OF_DATA = "run out of training data"


class TrainingError(StageError):
    """A run cannot be planned, started or finished; the message says which run and why."""


@dataclass(frozen=True)
class RunPlan:
    """A run with every setting resolved and its batch geometry checked."""

    name: str
    position: int
    tokenizer: str
    backend: str
    settings: dict
    model_path: str
    devices: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    global_batch_size: int
    accelerator: str
    tpu: dict | None = None
    hardware: str = "cpu"

    @property
    def target(self) -> str:
        """Where the run trains: 'local', or '<accelerator>-<zone>' for a TPU slice (one smoke job each)."""
        if self.backend == "local":
            return "local"
        return safe_name(f"{self.tpu['accelerator_type']}-{self.tpu['zone']}")

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * int(self.settings["max_target_length"])


def safe_name(text: str) -> str:
    """Lowercase letters, digits and '-' only (Cloud resource names, file names)."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")


# --- MaxText arguments ---------------------------------------------------------------------


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """The tokenizer's vocabulary rounded up to a multiple (MaxText shards the vocab axis; 128 suits TPU tiles)."""
    return int(math.ceil(vocab_size / multiple) * multiple)


def hardware_pairs(hardware: str) -> list[tuple[str, Any]]:
    if hardware in ("cpu", "gpu"):
        # one process, no coordinator: MaxText needs both flags on CPU (see ../shared/notes/platform.md)
        return [("hardware", hardware), ("skip_jax_distributed_system", True)]
    return []


def maxtext_train_args(
    plan: RunPlan,
    *,
    model_path: str,
    run_name: str,
    base_output_directory: str,
    tokenizer_path: str,
    vocab_size: int,
    data: dict,
    metrics_file: str | None = None,
) -> list[str]:
    """The argument list after ``python -m maxtext.trainers.pre_train.train``: the model YAML, then key=value."""
    s = plan.settings
    pairs: list[tuple[str, Any]] = [
        ("run_name", run_name),
        ("base_output_directory", base_output_directory),
        *[(key, value) for key, value in data.items() if value is not None],
        ("tokenizer_type", "huggingface"),
        ("tokenizer_path", tokenizer_path),
        ("vocab_size", vocab_size),
        ("steps", s["steps"]),
        ("learning_rate", s["learning_rate"]),
        ("lr_schedule_type", s["lr_schedule"]),
        ("warmup_steps_fraction", s["warmup_steps_fraction"]),
        ("learning_rate_final_fraction", s["learning_rate_final_fraction"]),
        ("per_device_batch_size", plan.per_device_batch_size),
        ("gradient_accumulation_steps", plan.gradient_accumulation_steps),
        ("max_target_length", s["max_target_length"]),
        ("packing", s["packing"]),
        ("num_epoch", s["epochs"]),
        ("init_weights_seed", s["seed"]),
        ("data_shuffle_seed", s["seed"]),
        ("dtype", s["dtype"]),
        ("enable_checkpointing", True),
        ("checkpoint_period", s["checkpoint_period"]),
        ("async_checkpointing", s["async_checkpointing"]),
        ("eval_interval", s["eval_interval"]),
        ("eval_steps", s["eval_steps"]),
        *hardware_pairs(plan.hardware),
    ]
    if metrics_file:
        pairs.append(("metrics_file", metrics_file))
    pairs.extend(sorted((s.get("extra") or {}).items()))
    return [model_path, *(maxtext_arg(key, value) for key, value in pairs)]


def smoke_args(plan: RunPlan, *, model_path: str, run_name: str, base_output_directory: str, steps: int) -> list[str]:
    """The seed's first TPU check: the run's model and batch shape on synthetic data, no checkpoints."""
    s = plan.settings
    pairs: list[tuple[str, Any]] = [
        ("run_name", run_name),
        ("base_output_directory", base_output_directory),
        ("dataset_type", "synthetic"),
        ("steps", steps),
        ("per_device_batch_size", plan.per_device_batch_size),
        ("gradient_accumulation_steps", plan.gradient_accumulation_steps),
        ("max_target_length", s["max_target_length"]),
        ("dtype", s["dtype"]),
        ("enable_checkpointing", False),
        *hardware_pairs(plan.hardware),
    ]
    pairs.extend(sorted((s.get("extra") or {}).items()))
    return [model_path, *(maxtext_arg(key, value) for key, value in pairs)]


def args_dict(args: Sequence[str]) -> dict[str, str]:
    return dict(argument.split("=", 1) for argument in args if "=" in argument)


def config_hash(
    args: Sequence[str], *, model_text: str, tokenizer_sha256: str, dataset_checksums: dict, global_batch_size: int
) -> str:
    """sha256 of everything that changes the trained weights (see :data:`NOT_HASHED` for what does not)."""
    semantic = {key: value for key, value in args_dict(args).items() if key not in NOT_HASHED}
    payload = {
        "args": semantic,
        "model": model_text,
        "tokenizer": tokenizer_sha256,
        "dataset": dataset_checksums,
        "global_batch_size": global_batch_size,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def versions() -> dict[str, str | None]:
    """The Python and package versions a run's manifest records."""
    return package_versions(VERSIONED_PACKAGES, python=True)


# --- checkpoints ---------------------------------------------------------------------------


def committed_steps(checkpoint_dir: str | Path) -> list[int]:
    """Steps with a finished orbax checkpoint in a local ``<run>/checkpoints`` folder (unfinished ones are temp folders)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    steps = []
    for child in folder.iterdir():
        if child.name.isdigit() and child.is_dir() and (child / "_CHECKPOINT_METADATA").is_file() and (child / "items").is_dir():
            steps.append(int(child.name))
    return sorted(steps)


# --- running MaxText -----------------------------------------------------------------------


def run_streaming(
    argv: Sequence[str], *, env: dict | None = None, on_line: Callable[[str], None] = lambda line: None, cwd: str | None = None
) -> int:
    """Run ``argv`` (no shell), pass each output line (stdout and stderr) to ``on_line``; return the exit code.

    If this process is interrupted (Ctrl-C, or Snakemake's SIGTERM, turned into
    KeyboardInterrupt by :func:`terminate_on_sigterm`), the child is stopped too.
    """
    process = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env, cwd=cwd, bufsize=1
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            on_line(line.rstrip("\n"))
        return process.wait()
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise


def terminate_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread, so children are stopped and cleanup runs."""

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (tests calling in a thread)
        pass


class LineTail:
    """Keeps the last lines of a process's output and logs every line to the 'maxtext' logger."""

    def __init__(self, keep: int = 200, extra: Callable[[str], None] | None = None):
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.extra = extra
        self.checkpoint_step: int | None = None
        self.restores: list[int] = []  # steps MaxText restored from, in order (one per start that resumed)

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        maxtext_log.info("%s", line)
        if (match := CHECKPOINT_LINE.search(line)) is not None:
            self.checkpoint_step = int(match.group(1))
        if (match := RESTORE_LINE.search(line)) is not None:
            self.restores.append(int(match.group(1)))
        if self.extra is not None:
            self.extra(line)

    @property
    def restored_step(self) -> int | None:
        return self.restores[0] if self.restores else None

    def error_summary(self) -> str:
        """The most telling line of a failed run's output, shortened."""
        for line in reversed(self.lines):
            if OUT_OF_DATA in line:
                return _shorten(line)
        for line in reversed(self.lines):
            if ERROR_LINE.search(line) and "Config param" not in line and line.strip():
                return _shorten(line)
        last = [line.strip() for line in self.lines if line.strip()][-3:]  # blank lines explain nothing
        return _shorten(" | ".join(last), limit=600) if last else "no output"


def _shorten(line: str, limit: int = 300) -> str:
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- the job: one run ----------------------------------------------------------------------


@dataclass
class RunInputs:
    """What a run's job reads, resolved at job time."""

    dataset: dict
    dataset_manifest: str
    tokenizer_dir: str
    tokenizer_stats: dict
    model_path: str
    model_text: str

    @classmethod
    def load(cls, dataset_manifest: str | Path, tokenizer_dir: str | Path, model_path: str | Path) -> RunInputs:
        manifest_path, tokenizer_path, model = Path(dataset_manifest), Path(tokenizer_dir), Path(model_path)
        dataset = read_dataset_manifest(manifest_path, error=TrainingError).data
        stats = read_tokenizer_stats(tokenizer_path, error=TrainingError).data
        if not model.is_file():
            raise TrainingError(f"{model}: model file not found (training.defaults.model or the run's model)")
        return cls(
            dataset,
            str(manifest_path),
            str(tokenizer_path.resolve()),
            stats,
            str(model.resolve()),
            model.read_text(encoding="utf-8"),
        )


@dataclass
class JobContext:
    """Everything about one run that the backends need, computed once."""

    plan: RunPlan
    inputs: RunInputs
    run_name: str
    config_hash: str
    vocab_size: int
    base_output_directory: str
    state_dir: Path
    args: list[str] = field(default_factory=list)

    @property
    def checkpoint_dir(self) -> str:
        return f"{self.base_output_directory.rstrip('/')}/{self.run_name}/checkpoints"

    @property
    def raw_metrics(self) -> Path:
        return self.state_dir / "metrics.raw.jsonl"


def checkpoint_base(configured: str | None, results_dir: str | Path) -> str:
    """MaxText's base_output_directory: ``configured`` (training.checkpoint_dir), or <results_dir>/checkpoints (absolute)."""
    if configured:
        return configured.rstrip("/") if str(configured).startswith("gs://") else str(Path(configured).resolve())
    return str((Path(results_dir) / "checkpoints").resolve())


def prepare_job(
    plan: RunPlan,
    inputs: RunInputs,
    *,
    base_output_directory: str,
    results_dir: str | Path,
    tokenizer_path: str | None = None,
    model_path: str | None = None,
) -> JobContext:
    """Build the MaxText arguments, the config hash and the run_name of a run.

    ``tokenizer_path`` and ``model_path`` are where MaxText will see them (a TPU
    worker's copy); by default the local paths.
    """
    data = dict(inputs.dataset["maxtext"])
    vocab = padded_vocab(int(inputs.tokenizer_stats["vocab_size"]), int(plan.settings["vocab_multiple"]))
    tokenizer_json = Path(inputs.tokenizer_dir) / "tokenizer.json"
    tokenizer_sha = (
        file_sha256(tokenizer_json) if tokenizer_json.is_file() else json.dumps(inputs.tokenizer_stats, sort_keys=True)
    )
    placeholder = maxtext_train_args(
        plan,
        model_path=model_path or inputs.model_path,
        run_name="",
        base_output_directory=base_output_directory,
        tokenizer_path=tokenizer_path or inputs.tokenizer_dir,
        vocab_size=vocab,
        data=data,
    )
    digest = config_hash(
        placeholder,
        model_text=inputs.model_text,
        tokenizer_sha256=tokenizer_sha,
        dataset_checksums=inputs.dataset.get("checksums") or {},
        global_batch_size=plan.global_batch_size,
    )
    run_name = f"{plan.name}-{digest[:8]}"
    state_dir = Path(results_dir).resolve() / "checkpoints" / run_name
    context = JobContext(plan, inputs, run_name, digest, vocab, base_output_directory, state_dir)
    metrics_file = str(context.raw_metrics) if plan.backend == "local" else None
    context.args = maxtext_train_args(
        plan,
        model_path=model_path or inputs.model_path,
        run_name=run_name,
        base_output_directory=base_output_directory,
        tokenizer_path=tokenizer_path or inputs.tokenizer_dir,
        vocab_size=vocab,
        data=data,
        metrics_file=metrics_file,
    )
    return context


@dataclass
class BackendResult:
    """What a backend reports about a finished (or failed) MaxText run."""

    returncode: int
    tail: LineTail
    attempts: int = 1
    preemptions: int = 0
    resumed_from_step: int | None = None
    details: dict = field(default_factory=dict)


def build_manifest(
    context: JobContext,
    result: BackendResult,
    summary: dict,
    checkpoint_step: int,
    *,
    wall_seconds: float,
    metrics_out: str | Path,
) -> dict:
    plan, inputs = context.plan, context.inputs
    s = plan.settings
    stats = inputs.tokenizer_stats
    return {
        "run": plan.name,
        "run_name": context.run_name,
        "backend": plan.backend,
        "accelerator": plan.accelerator,
        "devices": plan.devices,
        "tpu": plan.tpu,
        "tokenizer": {
            "name": plan.tokenizer,
            "path": inputs.tokenizer_dir,
            "vocab_size": stats["vocab_size"],
            **{key: stats.get(key) for key in ("bos_token_id", "eos_token_id", "pad_token_id")},
        },
        "vocab_size": context.vocab_size,
        "model": {"config": inputs.model_path, "sha256": hashlib.sha256(inputs.model_text.encode("utf-8")).hexdigest()},
        "dataset": {
            "manifest": inputs.dataset_manifest,
            "name": inputs.dataset.get("name"),
            "version": inputs.dataset.get("version"),
            "maxtext": inputs.dataset["maxtext"],
        },
        "learning_rate": s["learning_rate"],
        "steps": s["steps"],
        "global_batch_size": plan.global_batch_size,
        "per_device_batch_size": plan.per_device_batch_size,
        "gradient_accumulation_steps": plan.gradient_accumulation_steps,
        "max_target_length": s["max_target_length"],
        "packing": s["packing"],
        "checkpoint_period": s["checkpoint_period"],
        "lr_schedule": s["lr_schedule"],
        "warmup_steps_fraction": s["warmup_steps_fraction"],
        "seed": s["seed"],
        "tokens_per_step": plan.tokens_per_step,
        "maxtext_args": context.args,
        "base_output_directory": context.base_output_directory,
        "checkpoint_dir": context.checkpoint_dir,
        "final_step": summary["last_step"],
        "checkpoint_step": checkpoint_step,
        "checkpoint_uri": f"{context.checkpoint_dir}/{checkpoint_step}/items",
        "first_loss": summary["first_loss"],
        "final_loss": summary["final_loss"],
        "final_loss_mean_last_10": summary["final_loss_mean_last_10"],
        "min_loss": summary["min_loss"],
        "tokens_seen": summary["tokens_seen"],
        "tokens_processed": summary["tokens_processed"],
        "tokens_per_second": summary["tokens_per_second"],
        "wall_seconds": round(wall_seconds, 3),
        "attempts": result.attempts,
        "preemptions": result.preemptions,
        "resumed_from_step": result.resumed_from_step,
        "config_hash": context.config_hash,
        "versions": versions(),
        "git_commit": git_commit(),
        "metrics": str(metrics_out),
        **({"backend_details": result.details} if result.details else {}),
    }
