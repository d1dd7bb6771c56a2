"""Training stage: MaxText pretraining runs from the config, on this machine or on Cloud TPU.

A run is one entry of ``training.runs`` merged over ``training.defaults`` and the
built-in defaults (:data:`BUILTIN_DEFAULTS`). :func:`plan_run` resolves it into a
:class:`RunPlan` (batch geometry checked against the device count); at job time
:func:`train_run` turns the plan, the tokenizer folder and the dataset manifest into
MaxText's ``key=value`` arguments (:func:`maxtext_train_args`), runs MaxText through
a backend (``local``: a subprocess here; ``tpu``: :mod:`nanogerman.tpu`) and writes
two outputs: the per-step metrics (JSON lines) and ``train.json``, the manifest the
export stage reads (checkpoint directory and final step).

Checkpoints are not outputs: they live under ``<base_output_directory>/<run_name>/``
(``<results_dir>/checkpoints`` or a ``gs://`` ``training.checkpoint_dir``), so a
rerun of a killed or preempted job finds them and MaxText resumes from the last one.
``run_name`` is the run's name plus a hash of everything that changes the trained
weights (model file, MaxText settings, tokenizer, dataset checksums): changing the
learning rate starts a fresh run instead of resuming an incompatible checkpoint.

Heavy imports (MaxText, JAX) never happen here: MaxText always runs in a child process.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import logging
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from nanogerman.atomic import atomic_path, write_json
from nanogerman.curves import LogRecorder, log_metrics_path, merge_metrics
from nanogerman.errors import StageError

log = logging.getLogger(__name__)
maxtext_log = logging.getLogger("maxtext")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRAIN_MODULE = "maxtext.trainers.pre_train.train"
COMPILE_MODULE = "maxtext.trainers.pre_train.train_compile"

# Used where neither the run nor training.defaults sets a key (MaxText's own defaults where sensible).
BUILTIN_DEFAULTS: dict[str, Any] = {
    "model": "config/models/nano-german-slm.yml",
    "gradient_accumulation_steps": 1,
    "max_target_length": 2048,
    "packing": True,
    "checkpoint_period": 10_000,
    "async_checkpointing": False,
    "warmup_steps_fraction": 0.1,
    "lr_schedule": "cosine",
    "learning_rate_final_fraction": 0.1,
    "seed": 0,
    "epochs": 1,
    "eval_interval": -1,
    "eval_steps": -1,
    "dtype": "bfloat16",
    "vocab_multiple": 128,
    "extra": {},
}
REQUIRED_SETTINGS = ("learning_rate", "steps")
BATCH_KEYS = ("global_batch_size", "per_device_batch_size")
SETTING_KEYS = (*BUILTIN_DEFAULTS, *REQUIRED_SETTINGS, *BATCH_KEYS)
TPU_KEYS = ("project", "zone", "accelerator_type", "runtime_version", "provisioning")
# MaxText arguments that do not change the trained weights: left out of the config hash.
NOT_HASHED = frozenset({
    "run_name", "base_output_directory", "metrics_file", "checkpoint_period", "async_checkpointing",
    "enable_checkpointing", "eval_interval", "eval_steps", "tokenizer_path", "dataset_path", "hardware",
    "skip_jax_distributed_system", "enable_tensorboard", "grain_train_files", "grain_eval_files",
})
VERSIONED_PACKAGES = ("maxtext", "jax", "jaxlib", "flax", "orbax-checkpoint", "tensorflow-datasets", "transformers")

STEP_LINE = re.compile(
    r"completed step: (?P<step>\d+), seconds: (?P<seconds>[0-9.]+)"
    r"(?:.*?Tokens/s/device: (?P<tokens_per_sec>[0-9.]+))?"
    r".*?total_weights: (?P<weights>[0-9.]+), loss: (?P<loss>[-+0-9.eE]+|nan|inf)"
)
CHECKPOINT_LINE = re.compile(r"Saved a checkpoint at step (\d+)")
RESTORE_LINE = re.compile(r"restoring from this run's directory step (\d+)")
ALREADY_DONE = re.compile(r"a checkpoint already exists at step (\d+)")
ERROR_LINE = re.compile(r"\b(\w*Error|\w*Exception|StopTraining|RESOURCE_EXHAUSTED|Killed)\b")
OUT_OF_DATA = "run out of training data"


class TrainingError(StageError):
    """A run cannot be planned, started or finished; the message says which run and why."""


# --- planning: config -> RunPlan -------------------------------------------------------------


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


def training_section(config: dict) -> dict:
    return config.get("training") or {}


def run_names(config: dict) -> list[str]:
    return [entry["name"] for entry in training_section(config).get("runs") or []]


def run_entry(config: dict, name: str) -> tuple[int, dict]:
    runs = training_section(config).get("runs") or []
    for position, entry in enumerate(runs):
        if entry["name"] == name:
            return position, entry
    known = ", ".join(entry["name"] for entry in runs) or "none"
    raise TrainingError(f"config error: unknown training run {name!r}; training.runs defines {known}")


def merged_settings(training: dict, entry: dict) -> dict:
    """Built-in defaults < training.defaults < the run; ``extra`` dicts are merged key by key."""
    settings = copy.deepcopy(BUILTIN_DEFAULTS)
    for layer in (training.get("defaults") or {}, entry):
        if any(layer.get(key) is not None for key in BATCH_KEYS):
            # a layer that sizes the batch replaces the lower layers' choice entirely
            for key in BATCH_KEYS:
                settings[key] = layer.get(key)
        for key in SETTING_KEYS:
            if key in BATCH_KEYS or layer.get(key) is None:
                continue
            if key == "extra":
                settings["extra"] = {**settings["extra"], **layer["extra"]}
            else:
                settings[key] = copy.deepcopy(layer[key])
    return settings


def tpu_settings(training: dict, entry: dict) -> dict:
    """training.tpu with the run's own ``tpu`` keys (zone, accelerator_type, …) on top."""
    merged = {key: value for key, value in (training.get("tpu") or {}).items()}
    merged.update({key: value for key, value in (entry.get("tpu") or {}).items() if value is not None})
    return merged


# Devices JAX sees per chip-count suffix: v4/v5p names count TensorCores (2 per chip, one
# "megacore" device); v2/v3 count TensorCores that are separate devices; v5e/v6e count chips.
_ACCELERATOR = re.compile(r"^(v2|v3|v4|v5p|v5litepod|v5e|v6e)-(\d+)$")


def accelerator_devices(accelerator_type: str) -> int:
    """Number of JAX devices of a Cloud TPU accelerator type like 'v6e-8' or 'v4-32'."""
    match = _ACCELERATOR.match(accelerator_type or "")
    if not match:
        raise TrainingError(
            f"config error: accelerator_type {accelerator_type!r} is not a Cloud TPU type like 'v6e-8', 'v5litepod-16', 'v5p-8' or 'v4-32'"
        )
    family, count = match.group(1), int(match.group(2))
    return count // 2 if family in ("v4", "v5p") else count


def maxtext_topology(accelerator_type: str) -> str:
    """MaxText's name for an accelerator type (compile_topology): v5litepod-16 -> v5e-16."""
    accelerator_devices(accelerator_type)
    return accelerator_type.replace("v5litepod-", "v5e-")


def batch_geometry(settings: dict, devices: int, where: str) -> tuple[int, int, int]:
    """(per_device_batch_size, gradient_accumulation_steps, global_batch_size) for ``devices`` devices.

    The global batch is per_device_batch_size x devices x gradient_accumulation_steps
    (sequences per optimizer step). Give either number; both must agree if both are set.
    """
    accumulation = int(settings["gradient_accumulation_steps"])
    per_device = settings.get("per_device_batch_size")
    global_batch = settings.get("global_batch_size")
    if per_device is None and global_batch is None:
        raise TrainingError(f"config error: {where} sets neither global_batch_size nor per_device_batch_size; set one (here or in training.defaults)")
    if global_batch is not None:
        share = devices * accumulation
        if global_batch % share:
            raise TrainingError(
                f"config error: {where}.global_batch_size {global_batch} is not divisible by devices x gradient_accumulation_steps "
                f"= {devices} x {accumulation} = {share}; change global_batch_size or gradient_accumulation_steps"
            )
        derived = global_batch // share
        if per_device is not None and per_device != derived:
            raise TrainingError(
                f"config error: {where}.per_device_batch_size {per_device} disagrees with global_batch_size {global_batch} "
                f"/ ({devices} devices x {accumulation} accumulation steps) = {derived}; set only one of them"
            )
        return derived, accumulation, global_batch
    if isinstance(per_device, float) and not per_device.is_integer():
        raise TrainingError(f"config error: {where}.per_device_batch_size is {per_device}; expected a whole number of sequences")
    per_device = int(per_device)
    return per_device, accumulation, per_device * devices * accumulation


def resolve_model_path(path: str) -> str:
    """A relative model path is looked up in the working directory, then in the project folder."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return str(candidate.resolve())
    return str((PROJECT_ROOT / candidate).resolve())


def plan_run(config: dict, name: str) -> RunPlan:
    """Resolve run ``name``: merged settings, backend, device count and batch geometry."""
    training = training_section(config)
    position, entry = run_entry(config, name)
    where = f"training.runs[{position}]"
    settings = merged_settings(training, entry)
    for key in REQUIRED_SETTINGS:
        if settings.get(key) is None:
            raise TrainingError(f"config error: {where} ({name}) has no {key}; set it there or in training.defaults")
    if settings["learning_rate"] <= 0:
        raise TrainingError(f"config error: {where}.learning_rate is {settings['learning_rate']}; expected a number > 0")
    backend = training.get("backend", "local")
    tpu = None
    local = training.get("local") or {}
    hardware = local.get("hardware", "cpu")
    if backend == "tpu":
        tpu = tpu_settings(training, entry)
        missing = [key for key in ("project", "zone", "accelerator_type", "runtime_version") if not tpu.get(key)]
        if missing:
            raise TrainingError(f"config error: {where} ({name}) runs on the tpu backend but training.tpu.{missing[0]} is not set")
        checkpoint_dir = training.get("checkpoint_dir") or ""
        if not str(checkpoint_dir).startswith("gs://"):
            raise TrainingError(
                f"config error: training.checkpoint_dir is {checkpoint_dir or None!r}; the tpu backend needs a gs://bucket/prefix "
                "(TPU VMs lose their disks when preempted)"
            )
        devices = accelerator_devices(tpu["accelerator_type"])
        accelerator = tpu["accelerator_type"]
        hardware = "tpu"
    else:
        devices = int(local.get("devices", 1))
        accelerator = hardware
    per_device, accumulation, global_batch = batch_geometry(settings, devices, where)
    return RunPlan(
        name=name, position=position, tokenizer=entry["tokenizer"], backend=backend, settings=settings,
        model_path=resolve_model_path(settings["model"]), devices=devices, per_device_batch_size=per_device,
        gradient_accumulation_steps=accumulation, global_batch_size=global_batch, accelerator=accelerator,
        tpu=tpu, hardware=hardware,
    )


def plan_runs(config: dict) -> list[RunPlan]:
    return [plan_run(config, name) for name in run_names(config)]


def check_training(config: dict) -> None:
    """Config checks a schema cannot express; raises ConfigError-compatible one-line TrainingErrors."""
    from nanogerman.config import check_unique_names, tokenizer_entry

    training = config.get("training")
    if not training:
        return
    runs = training.get("runs") or []
    check_unique_names(runs, "training.runs")
    known = [entry["name"] for entry in config.get("tokenizers") or []]
    for position, entry in enumerate(runs):
        if entry["name"] == "smoke":
            raise TrainingError(f"config error: training.runs[{position}].name 'smoke' is reserved (results/train/smoke/ holds the smoke jobs)")
        if entry["tokenizer"] not in known:
            raise TrainingError(
                f"config error: training.runs[{position}].tokenizer is {entry['tokenizer']!r}; expected the name of an entry "
                f"in tokenizers ({', '.join(known) or 'none defined'})"
            )
        tokenizer_entry(config, entry["tokenizer"])
        plan = plan_run(config, entry["name"])
        if not Path(plan.model_path).is_file():
            raise TrainingError(f"config error: training.runs[{position}] ({plan.name}): model file {plan.settings['model']!r} not found")


def smoke_plans(config: dict) -> dict[str, RunPlan]:
    """The first run of each training target: the smoke job of that target trains its shape on synthetic data."""
    plans: dict[str, RunPlan] = {}
    for plan in plan_runs(config):
        plans.setdefault(plan.target, plan)
    return plans


# --- MaxText arguments ---------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A config value as MaxText's ``key=value`` parser reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    if value is None:
        return "null"
    return str(value)


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
    return [model_path, *(f"{key}={format_value(value)}" for key, value in pairs)]


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
    return [model_path, *(f"{key}={format_value(value)}" for key, value in pairs)]


def args_dict(args: Sequence[str]) -> dict[str, str]:
    return dict(argument.split("=", 1) for argument in args if "=" in argument)


def config_hash(args: Sequence[str], *, model_text: str, tokenizer_sha256: str, dataset_checksums: dict, global_batch_size: int) -> str:
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


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit() -> str | None:
    """The project's git commit (provenance for the report), or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


# --- metrics -----------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file; a torn last line (process killed mid-write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def dedupe_steps(records: Iterable[dict]) -> list[dict]:
    """One record per step, sorted; a step logged twice (rerun after resuming) keeps its last record."""
    by_step: dict[int, dict] = {}
    for record in records:
        if "step" not in record:
            continue
        step = int(record["step"])
        by_step[step] = {**record, "step": step}
    return [by_step[step] for step in sorted(by_step)]


def parse_step_line(line: str) -> dict | None:
    """A MaxText 'completed step: …' log line as a metrics record (what the tpu backend streams)."""
    match = STEP_LINE.search(line)
    if not match:
        return None
    record = {
        "step": int(match["step"]),
        "learning/loss": float(match["loss"]),
        "learning/total_weights": float(match["weights"]),
        "perf/step_time_seconds": float(match["seconds"]),
    }
    if match["tokens_per_sec"] is not None:
        record["perf/per_device_tokens_per_sec"] = float(match["tokens_per_sec"])
    return record


def last_match(pattern: re.Pattern, lines: Iterable[str]) -> int | None:
    found = None
    for line in lines:
        match = pattern.search(line)
        if match:
            found = int(match.group(1))
    return found


def summarize_metrics(records: Sequence[dict], tokens_per_step: int) -> dict:
    """Loss and throughput figures of a run's per-step records (deduplicated)."""
    if not records:
        return {"steps_logged": 0}
    losses = [float(record["learning/loss"]) for record in records]
    tail = losses[-min(10, len(losses)):]
    weights = [float(record.get("learning/total_weights", tokens_per_step)) for record in records]
    times = [float(record.get("perf/step_time_seconds", 0.0)) for record in records]
    steady = [(w, t) for w, t in zip(weights[2:], times[2:]) if t > 0] or [(w, t) for w, t in zip(weights, times) if t > 0]
    tokens_per_second = None
    if steady:
        median_time = statistics.median(t for _, t in steady)
        kept = [(w, t) for w, t in steady if t <= 5 * median_time]  # drop compile and checkpoint outliers
        tokens_per_second = sum(w for w, _ in kept) / sum(t for _, t in kept)
    return {
        "steps_logged": len(records),
        "first_step": records[0]["step"],
        "last_step": records[-1]["step"],
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "final_loss_mean_last_10": sum(tail) / len(tail),
        "min_loss": min(losses),
        "tokens_seen": int(sum(weights)),
        "tokens_processed": tokens_per_step * len(records),
        "tokens_per_second": tokens_per_second,
        "step_seconds_total": sum(times),
    }


def write_jsonl(destination: str | Path, records: Iterable[dict]) -> None:
    with atomic_path(destination) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=True) + "\n")


class StepRecorder:
    """Appends streamed step records to a JSON-lines file the way MaxText's metrics_file does (step 0 truncates)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str) -> None:
        record = parse_step_line(line)
        if record is None:
            return
        mode = "w" if record["step"] == 0 else "a"
        with open(self.path, mode, encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


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


def run_streaming(argv: Sequence[str], *, env: dict | None = None, on_line: Callable[[str], None] = lambda line: None,
                  cwd: str | None = None) -> int:
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
            if ERROR_LINE.search(line) and "Config param" not in line:
                return _shorten(line)
        return _shorten(self.lines[-1]) if self.lines else "no output"


def _shorten(line: str, limit: int = 300) -> str:
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def local_env(hardware: str, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    if hardware == "cpu":
        env["JAX_PLATFORMS"] = "cpu"  # otherwise libtpu probes for TPU metadata and stalls
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    return env


def maxtext_command(module: str, args: Sequence[str], python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", module, *args]


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
    def load(cls, dataset_manifest: str | Path, tokenizer_dir: str | Path, model_path: str | Path) -> "RunInputs":
        manifest_path, tokenizer_path, model = Path(dataset_manifest), Path(tokenizer_dir), Path(model_path)
        try:
            dataset = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise TrainingError(f"{manifest_path}: unreadable dataset manifest ({error}); rerun the dataset stage") from None
        if not isinstance(dataset.get("maxtext"), dict):
            raise TrainingError(f"{manifest_path}: no 'maxtext' options in the dataset manifest; rerun the dataset stage")
        stats_path = tokenizer_path / "stats.json"
        try:
            stats = json.loads(stats_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise TrainingError(f"{stats_path}: unreadable tokenizer stats ({error}); rerun the tokenizer stage") from None
        if not isinstance(stats.get("vocab_size"), int) or stats["vocab_size"] < 1:
            raise TrainingError(f"{stats_path}: no vocab_size; rerun the tokenizer stage")
        if not model.is_file():
            raise TrainingError(f"{model}: model file not found (training.defaults.model or the run's model)")
        return cls(dataset, str(manifest_path), str(tokenizer_path.resolve()), stats, str(model.resolve()), model.read_text(encoding="utf-8"))


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


def checkpoint_base(training: dict, results_dir: str | Path) -> str:
    """MaxText's base_output_directory: training.checkpoint_dir, or <results_dir>/checkpoints (absolute)."""
    configured = training.get("checkpoint_dir")
    if configured:
        return configured.rstrip("/") if str(configured).startswith("gs://") else str(Path(configured).resolve())
    return str((Path(results_dir) / "checkpoints").resolve())


def prepare_job(plan: RunPlan, inputs: RunInputs, *, base_output_directory: str, results_dir: str | Path,
                tokenizer_path: str | None = None, model_path: str | None = None) -> JobContext:
    """Build the MaxText arguments, the config hash and the run_name of a run.

    ``tokenizer_path`` and ``model_path`` are where MaxText will see them (a TPU
    worker's copy); by default the local paths.
    """
    data = dict(inputs.dataset["maxtext"])
    vocab = padded_vocab(int(inputs.tokenizer_stats["vocab_size"]), int(plan.settings["vocab_multiple"]))
    tokenizer_json = Path(inputs.tokenizer_dir) / "tokenizer.json"
    tokenizer_sha = file_sha256(tokenizer_json) if tokenizer_json.is_file() else json.dumps(inputs.tokenizer_stats, sort_keys=True)
    placeholder = maxtext_train_args(
        plan, model_path=model_path or inputs.model_path, run_name="", base_output_directory=base_output_directory,
        tokenizer_path=tokenizer_path or inputs.tokenizer_dir, vocab_size=vocab, data=data,
    )
    digest = config_hash(
        placeholder, model_text=inputs.model_text, tokenizer_sha256=tokenizer_sha,
        dataset_checksums=inputs.dataset.get("checksums") or {}, global_batch_size=plan.global_batch_size,
    )
    run_name = f"{plan.name}-{digest[:8]}"
    state_dir = Path(results_dir).resolve() / "checkpoints" / run_name
    context = JobContext(plan, inputs, run_name, digest, vocab, base_output_directory, state_dir)
    metrics_file = str(context.raw_metrics) if plan.backend == "local" else None
    context.args = maxtext_train_args(
        plan, model_path=model_path or inputs.model_path, run_name=run_name, base_output_directory=base_output_directory,
        tokenizer_path=tokenizer_path or inputs.tokenizer_dir, vocab_size=vocab, data=data, metrics_file=metrics_file,
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


def run_local_backend(context: JobContext, *, python: str | None = None) -> BackendResult:
    """MaxText in a subprocess on this machine; its output goes to the job's log."""
    context.state_dir.mkdir(parents=True, exist_ok=True)
    resumed = None
    if not context.base_output_directory.startswith("gs://"):
        steps = committed_steps(context.checkpoint_dir)
        resumed = steps[-1] if steps else None
    if resumed is not None and resumed >= int(context.plan.settings["steps"]) - 1:
        # MaxText refuses to start when the last step is already saved (a forced rerun): nothing to train
        log.info("run %s: already trained (checkpoint step %d in %s); not starting MaxText", context.run_name, resumed,
                 context.checkpoint_dir)
        return BackendResult(0, LineTail(), resumed_from_step=resumed, details={"already_complete": True})
    if resumed is not None:
        log.info("run %s: resuming from checkpoint step %d in %s", context.run_name, resumed, context.checkpoint_dir)
    command = maxtext_command(TRAIN_MODULE, context.args, python)
    log.info("running: %s", " ".join(command))
    tail = LineTail(extra=LogRecorder(log_metrics_path(context.raw_metrics)))  # MaxText's metrics_file loses eval records
    returncode = run_streaming(command, env=local_env(context.plan.hardware), on_line=tail)
    return BackendResult(returncode, tail, resumed_from_step=resumed if resumed is not None else tail.restored_step)


def train_run(
    plan: RunPlan,
    *,
    dataset_manifest: str | Path,
    tokenizer_dir: str | Path,
    training: dict,
    results_dir: str | Path,
    manifest_out: str | Path,
    metrics_out: str | Path,
    clock: Callable[[], float] = time.time,
) -> dict:
    """Train one run through its backend and write its metrics JSONL and ``train.json``; returns the manifest."""
    started = clock()
    inputs = RunInputs.load(dataset_manifest, tokenizer_dir, plan.model_path)
    base = checkpoint_base(training, results_dir)
    if plan.backend == "tpu":
        from nanogerman import tpu

        context, result = tpu.run_training_on_tpu(plan, inputs, training=training, results_dir=results_dir, base_output_directory=base)
    else:
        context = prepare_job(plan, inputs, base_output_directory=base, results_dir=results_dir)
        result = run_local_backend(context)
    steps = int(plan.settings["steps"])
    done = last_match(ALREADY_DONE, result.tail.lines)
    if result.returncode != 0 and done is not None and done >= steps - 1:
        log.info("run %s: MaxText found the run already trained (checkpoint step %d)", plan.name, done)
        result.returncode, result.tail.checkpoint_step = 0, done
        result.details["already_complete"] = True
    if result.returncode != 0:
        raise TrainingError(
            f"run {plan.name}: MaxText exited with code {result.returncode}: {result.tail.error_summary()} "
            f"(full output in the job's log; rerun to resume from the last checkpoint in {context.checkpoint_dir})"
        )
    records = merge_metrics(read_jsonl(log_metrics_path(context.raw_metrics)), read_jsonl(context.raw_metrics))
    summary = summarize_metrics(records, plan.tokens_per_step)
    last_step = summary.get("last_step")
    if last_step is None or last_step < steps - 1:
        hint = " (the data ran out: raise epochs)" if any(OUT_OF_DATA in line for line in result.tail.lines) else ""
        raise TrainingError(
            f"run {plan.name}: MaxText stopped after step {last_step} of {steps - 1}{hint}: {result.tail.error_summary()}"
        )
    checkpoint_step = final_checkpoint_step(context, result)
    if checkpoint_step is None:
        raise TrainingError(f"run {plan.name}: no checkpoint found in {context.checkpoint_dir} after training")
    write_jsonl(metrics_out, records)
    manifest = build_manifest(context, result, summary, checkpoint_step, wall_seconds=clock() - started, metrics_out=metrics_out)
    write_json(manifest_out, manifest)
    log.info(
        "run %s: %d steps, loss %.3f -> %.3f, %d tokens, checkpoint %s",
        plan.name, steps, summary["first_loss"], summary["final_loss"], summary["tokens_seen"], manifest["checkpoint_uri"],
    )
    return manifest


def final_checkpoint_step(context: JobContext, result: BackendResult) -> int | None:
    """The last finished checkpoint: listed on disk for local folders, else from MaxText's log."""
    if not context.base_output_directory.startswith("gs://"):
        steps = committed_steps(context.checkpoint_dir)
        return steps[-1] if steps else None
    return result.tail.checkpoint_step


def build_manifest(context: JobContext, result: BackendResult, summary: dict, checkpoint_step: int, *,
                   wall_seconds: float, metrics_out: str | Path) -> dict:
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


# --- smoke and fit jobs --------------------------------------------------------------------


def smoke_run(plan: RunPlan, *, training: dict, results_dir: str | Path, out: str | Path, clock: Callable[[], float] = time.time) -> dict:
    """Train the target's model shape on synthetic data for a few steps; fail if MaxText fails or the loss is not finite."""
    started = clock()
    steps = int((training.get("smoke") or {}).get("steps", 5))
    base = checkpoint_base(training, results_dir)
    run_name = f"smoke-{plan.target}"
    if plan.backend == "tpu":
        from nanogerman import tpu

        result, records = tpu.run_smoke_on_tpu(plan, training=training, results_dir=results_dir, base_output_directory=base,
                                               run_name=run_name, steps=steps)
    else:
        args = smoke_args(plan, model_path=plan.model_path, run_name=run_name, base_output_directory=base, steps=steps)
        recorder_path = Path(results_dir).resolve() / "checkpoints" / run_name / "metrics.raw.jsonl"
        recorder_path.unlink(missing_ok=True)
        command = maxtext_command(TRAIN_MODULE, args)
        log.info("running: %s", " ".join(command))
        tail = LineTail(extra=StepRecorder(recorder_path))
        result = BackendResult(run_streaming(command, env=local_env(plan.hardware), on_line=tail), tail)
        records = dedupe_steps(read_jsonl(recorder_path))
    if result.returncode != 0:
        raise TrainingError(f"smoke test on {plan.target} failed: MaxText exited with code {result.returncode}: {result.tail.error_summary()}")
    losses = [record["learning/loss"] for record in records]
    if len(records) < steps or not all(math.isfinite(loss) for loss in losses):
        raise TrainingError(f"smoke test on {plan.target}: {len(records)} of {steps} steps logged, losses {losses}")
    report = {
        "target": plan.target,
        "backend": plan.backend,
        "accelerator": plan.accelerator,
        "devices": plan.devices,
        "model": plan.model_path,
        "steps": steps,
        "per_device_batch_size": plan.per_device_batch_size,
        "max_target_length": plan.settings["max_target_length"],
        "losses": losses,
        "wall_seconds": round(clock() - started, 3),
        "versions": versions(),
        "attempts": result.attempts,
    }
    write_json(out, report)
    return report


# HBM per chip (GiB) by family, for the fit check (v2/v3: per TensorCore, which is one device).
HBM_GIB = {"v2": 8, "v3": 16, "v4": 32, "v5p": 95, "v5litepod": 16, "v5e": 16, "v6e": 32}
_MEMORY_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
                  "generated_code_size_in_bytes")
_OOM = (
    # libtpu 0.0.5x: "CompileTimeHbmOom: Ran out of memory on HBM, the total memory required for HLO temporaries (153.07G) exceeds available HBM (31.24G)"
    re.compile(r"Ran out of memory[^\n]*?required[^\n]*?\(([0-9.]+)([KMGT])?\)[^\n]*?available HBM \(([0-9.]+)([KMGT])?\)"),
    # older XLA: "Ran out of memory in memory space hbm. Used 41.25G of 31.25G hbm."
    re.compile(r"(?:Ran out of memory|RESOURCE_EXHAUSTED)[^\n]*?(?:Used|used) ([0-9.]+)([KMGT])? ?(?:i?B)? of ([0-9.]+)([KMGT])? ?(?:i?B)?"),
)


def parse_memory_analysis(text: str) -> dict | None:
    """The byte counts of ``compiled.memory_analysis()`` as train_compile prints them, plus the per-chip total."""
    found = {}
    for name in _MEMORY_FIELDS:
        match = re.search(rf"{name}=(\d+)", text)
        if match:
            found[name] = int(match.group(1))
    if "argument_size_in_bytes" not in found:
        return None
    found["per_chip_bytes"] = (found.get("argument_size_in_bytes", 0) + found.get("output_size_in_bytes", 0)
                               - found.get("alias_size_in_bytes", 0) + found.get("temp_size_in_bytes", 0)
                               + found.get("generated_code_size_in_bytes", 0))
    return found


def parse_oom(text: str) -> tuple[float, float] | None:
    """(used GiB, capacity GiB) from an XLA out-of-memory message, if there is one."""
    match = next((found for pattern in _OOM if (found := pattern.search(text))), None)
    if not match:
        return None
    scale = {None: 1 / 2**30, "K": 1 / 2**20, "M": 1 / 2**10, "G": 1.0, "T": 2**10}
    return float(match.group(1)) * scale[match.group(2)], float(match.group(3)) * scale[match.group(4)]


def hbm_gib(accelerator_type: str, configured: float | None = None) -> float:
    if configured:
        return float(configured)
    family = _ACCELERATOR.match(accelerator_type).group(1)
    return float(HBM_GIB[family])


def fit_args(plan: RunPlan, *, model_path: str, vocab_size: int) -> list[str]:
    """train_compile arguments: the run's model and batch shape, compiled for its TPU topology."""
    s = plan.settings
    pairs: list[tuple[str, Any]] = [
        ("hardware", "tpu"),
        ("compile_topology", maxtext_topology(plan.accelerator)),
        ("compile_topology_num_slices", 1),
        ("run_name", f"fit-{plan.name}"),
        ("dataset_type", "synthetic"),
        ("vocab_size", vocab_size),
        ("per_device_batch_size", plan.per_device_batch_size),
        ("gradient_accumulation_steps", plan.gradient_accumulation_steps),
        ("max_target_length", s["max_target_length"]),
        ("dtype", s["dtype"]),
        ("steps", s["steps"]),
    ]
    pairs.extend(sorted((s.get("extra") or {}).items()))
    return [model_path, *(f"{key}={format_value(value)}" for key, value in pairs)]


def fit_check(plan: RunPlan, *, tokenizer_dir: str | Path, out: str | Path, fit: dict | None = None,
              clock: Callable[[], float] = time.time) -> dict:
    """Compile the run's train step ahead of time for its TPU topology (on this CPU) and check it fits in HBM."""
    started = clock()
    fit = fit or {}
    if plan.backend != "tpu":
        raise TrainingError(f"run {plan.name}: the fit check compiles for a TPU topology; the run uses the {plan.backend} backend")
    stats = json.loads((Path(tokenizer_dir) / "stats.json").read_text(encoding="utf-8"))
    vocab = padded_vocab(int(stats["vocab_size"]), int(plan.settings["vocab_multiple"]))
    args = fit_args(plan, model_path=plan.model_path, vocab_size=vocab)
    env = dict(os.environ, TPU_SKIP_MDS_QUERY="1", ALLOW_MULTIPLE_LIBTPU_LOAD="true", JAX_PLATFORMS="cpu")
    command = maxtext_command(COMPILE_MODULE, args)
    log.info("running: %s", " ".join(command))
    tail = LineTail(keep=400)
    returncode = run_streaming(command, env=env, on_line=tail)
    text = "\n".join(tail.lines)
    capacity = hbm_gib(plan.accelerator, fit.get("hbm_gib"))
    oom = parse_oom(text)
    if oom is not None:
        raise TrainingError(
            f"run {plan.name} does not fit {plan.accelerator}: the train step needs {oom[0]:.2f} GiB per chip, a chip has {oom[1]:.2f} GiB; "
            "lower per_device_batch_size (raise gradient_accumulation_steps) or use a larger slice"
        )
    if returncode != 0:
        raise TrainingError(f"run {plan.name}: train_compile for {plan.accelerator} failed (code {returncode}): {tail.error_summary()}")
    memory = parse_memory_analysis(text)
    if memory is None:
        raise TrainingError(f"run {plan.name}: train_compile printed no memory analysis; see the job's log")
    needed = memory["per_chip_bytes"] / 2**30
    limit = capacity * float(fit.get("max_fraction", 0.95))
    report = {
        "run": plan.name,
        "accelerator": plan.accelerator,
        "compile_topology": maxtext_topology(plan.accelerator),
        "per_device_batch_size": plan.per_device_batch_size,
        "gradient_accumulation_steps": plan.gradient_accumulation_steps,
        "max_target_length": plan.settings["max_target_length"],
        "vocab_size": vocab,
        "memory": memory,
        "per_chip_gib": round(needed, 3),
        "hbm_gib": capacity,
        "fits": needed <= limit,
        "seconds": round(clock() - started, 3),
        "versions": versions(),
    }
    if needed > limit:
        raise TrainingError(
            f"run {plan.name} does not fit {plan.accelerator}: {needed:.2f} GiB per chip of {capacity:.0f} GiB HBM "
            f"(limit {limit:.2f} GiB); lower per_device_batch_size (raise gradient_accumulation_steps) or use a larger slice"
        )
    write_json(out, report)
    log.info("run %s fits %s: %.2f GiB per chip of %.0f GiB", plan.name, plan.accelerator, needed, capacity)
    return report
