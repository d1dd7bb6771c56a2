"""Training stage: MaxText pretraining runs from the config, on this machine or on Cloud TPU.

A run is one entry of ``training.runs`` merged over ``training.defaults`` and the
built-in defaults (:data:`BUILTIN_DEFAULTS`). :func:`plan_run` resolves it into a
:class:`RunPlan` (batch geometry checked against the device count); at job time
:func:`train_run` turns the plan, the tokenizer folder and the dataset manifest into
MaxText's ``key=value`` arguments (:func:`maxtext_train_args`), runs MaxText through
a backend (``local``: a subprocess here; ``tpu``: :mod:`nanogerman.tpu_run`) and writes
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

import copy
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nanogerman import tpu_run
from nanogerman.atomic import write_json
from nanogerman.childenv import child_env
from nanogerman.curves import LogRecorder, log_metrics_path, merge_metrics
from nanogerman.job import (
    ALREADY_DONE,
    OUT_OF_DATA,
    TRAIN_MODULE,
    BackendResult,
    JobContext,
    LineTail,
    RunInputs,
    RunPlan,
    TrainingError,
    build_manifest,
    checkpoint_base,
    committed_steps,
    padded_vocab,
    prepare_job,
    run_streaming,
    smoke_args,
    versions,
)
from nanogerman.manifests import read_tokenizer_stats
from nanogerman.maxtext_values import maxtext_arg
from nanogerman.metrics import StepRecorder, dedupe_steps, last_match, read_jsonl, summarize_metrics, write_jsonl
from nanogerman.provenance import PROJECT_ROOT
from nanogerman.resume import prune_unrecorded_checkpoints
from nanogerman.selection import check_unique_names, tokenizer_entry

log = logging.getLogger(__name__)

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


# --- planning: config -> RunPlan -------------------------------------------------------------


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
        raise TrainingError(
            f"config error: {where} sets neither global_batch_size nor per_device_batch_size; set one (here or in training.defaults)"
        )
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
    backend = training["backend"]
    tpu = None
    local = training["local"]
    hardware = local["hardware"]
    if backend == "tpu":
        tpu = tpu_settings(training, entry)
        missing = [key for key in ("project", "zone", "accelerator_type", "runtime_version") if not tpu.get(key)]
        if missing:
            raise TrainingError(
                f"config error: {where} ({name}) runs on the tpu backend but training.tpu.{missing[0]} is not set"
            )
        checkpoint_dir = training.get("checkpoint_dir") or ""
        if not str(checkpoint_dir).startswith("gs://"):
            raise TrainingError(
                f"config error: training.checkpoint_dir is {checkpoint_dir or None!r}; the tpu backend needs a gs://bucket/prefix "
                "(TPU VMs lose their disks when preempted)"
            )
        if not (config.get("dataset") or {}).get("publish_to"):
            raise TrainingError(
                "config error: dataset.publish_to is null; the tpu backend's workers read the dataset from Cloud Storage: "
                "set dataset.publish_to to a gs://bucket/prefix"
            )
        devices = accelerator_devices(tpu["accelerator_type"])
        accelerator = tpu["accelerator_type"]
        hardware = "tpu"
    else:
        devices = int(local["devices"])
        accelerator = hardware
    per_device, accumulation, global_batch = batch_geometry(settings, devices, where)
    return RunPlan(
        name=name,
        position=position,
        tokenizer=entry["tokenizer"],
        backend=backend,
        settings=settings,
        model_path=resolve_model_path(settings["model"]),
        devices=devices,
        per_device_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        global_batch_size=global_batch,
        accelerator=accelerator,
        tpu=tpu,
        hardware=hardware,
    )


def plan_runs(config: dict) -> list[RunPlan]:
    return [plan_run(config, name) for name in run_names(config)]


def check_training(config: dict) -> None:
    """Config checks a schema cannot express; raises ConfigError-compatible one-line TrainingErrors."""
    training = config.get("training")
    if not training:
        return
    runs = training.get("runs") or []
    check_unique_names(runs, "training.runs")
    known = [entry["name"] for entry in config.get("tokenizers") or []]
    for position, entry in enumerate(runs):
        if entry["name"] == "smoke":
            raise TrainingError(
                f"config error: training.runs[{position}].name 'smoke' is reserved (results/train/smoke/ holds the smoke jobs)"
            )
        if entry["tokenizer"] not in known:
            raise TrainingError(
                f"config error: training.runs[{position}].tokenizer is {entry['tokenizer']!r}; expected the name of an entry "
                f"in tokenizers ({', '.join(known) or 'none defined'})"
            )
        tokenizer_entry(config, entry["tokenizer"])
        plan = plan_run(config, entry["name"])
        if not Path(plan.model_path).is_file():
            raise TrainingError(
                f"config error: training.runs[{position}] ({plan.name}): model file {plan.settings['model']!r} not found"
            )


def smoke_plans(config: dict) -> dict[str, RunPlan]:
    """The first run of each training target: the smoke job of that target trains its shape on synthetic data."""
    plans: dict[str, RunPlan] = {}
    for plan in plan_runs(config):
        plans.setdefault(plan.target, plan)
    return plans


def local_env(hardware: str, base: dict | None = None) -> dict:
    env = child_env(base)  # allow-listed: no HF_TOKEN (MaxText would log it as a setting)
    if hardware == "cpu":
        env["JAX_PLATFORMS"] = "cpu"  # otherwise libtpu probes for TPU metadata and stalls
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    return env


def maxtext_command(module: str, args: Sequence[str], python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", module, *args]


def run_local_backend(context: JobContext, *, python: str | None = None) -> BackendResult:
    """MaxText in a subprocess on this machine; its output goes to the job's log."""
    context.state_dir.mkdir(parents=True, exist_ok=True)
    resumed = None
    if not context.base_output_directory.startswith("gs://"):
        steps = committed_steps(context.checkpoint_dir)
        # both sources: MaxText empties its metrics file at each evaluation, the log recorder keeps every step
        recorded = [
            record["step"]
            for record in merge_metrics(read_jsonl(log_metrics_path(context.raw_metrics)), read_jsonl(context.raw_metrics))
        ]
        if prune_unrecorded_checkpoints(context.checkpoint_dir, steps, recorded):  # every step in the metrics exactly once
            steps = committed_steps(context.checkpoint_dir)
        resumed = steps[-1] if steps else None
    if resumed is not None and resumed >= int(context.plan.settings["steps"]) - 1:
        # MaxText refuses to start when the last step is already saved (a forced rerun): nothing to train
        log.info(
            "run %s: already trained (checkpoint step %d in %s); not starting MaxText",
            context.run_name,
            resumed,
            context.checkpoint_dir,
        )
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
    checkpoint_dir: str | None,
    results_dir: str | Path,
    manifest_out: str | Path,
    metrics_out: str | Path,
    clock: Callable[[], float] = time.time,
) -> dict:
    """Train one run through its backend and write its metrics JSONL and ``train.json``; returns the manifest.

    ``checkpoint_dir`` is training.checkpoint_dir (None: <results_dir>/checkpoints).
    """
    started = clock()
    inputs = RunInputs.load(dataset_manifest, tokenizer_dir, plan.model_path)
    base = checkpoint_base(checkpoint_dir, results_dir)
    if plan.backend == "tpu":
        context, result = tpu_run.run_training_on_tpu(plan, inputs, results_dir=results_dir, base_output_directory=base)
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
    wall_seconds = clock() - started
    if result.details.get("already_complete"):  # trained by an earlier, killed job: its time is in MaxText's step times
        wall_seconds = max(wall_seconds, summary["step_seconds_total"])
    manifest = build_manifest(context, result, summary, checkpoint_step, wall_seconds=wall_seconds, metrics_out=metrics_out)
    write_json(manifest_out, manifest)
    log.info(
        "run %s: %d steps, loss %.3f -> %.3f, %d tokens, checkpoint %s",
        plan.name,
        steps,
        summary["first_loss"],
        summary["final_loss"],
        summary["tokens_seen"],
        manifest["checkpoint_uri"],
    )
    return manifest


def final_checkpoint_step(context: JobContext, result: BackendResult) -> int | None:
    """The last finished checkpoint: listed on disk for local folders, else from MaxText's log."""
    if not context.base_output_directory.startswith("gs://"):
        steps = committed_steps(context.checkpoint_dir)
        return steps[-1] if steps else None
    return result.tail.checkpoint_step


# --- smoke and fit jobs --------------------------------------------------------------------


def smoke_run(
    plan: RunPlan,
    *,
    steps: int,
    checkpoint_dir: str | None,
    results_dir: str | Path,
    out: str | Path,
    clock: Callable[[], float] = time.time,
) -> dict:
    """Train the target's model shape on synthetic data for ``steps`` steps; fail if MaxText fails or the loss is not finite."""
    started = clock()
    base = checkpoint_base(checkpoint_dir, results_dir)
    run_name = f"smoke-{plan.target}"
    if plan.backend == "tpu":
        result, records = tpu_run.run_smoke_on_tpu(
            plan, results_dir=results_dir, base_output_directory=base, run_name=run_name, steps=steps
        )
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
        raise TrainingError(
            f"smoke test on {plan.target} failed: MaxText exited with code {result.returncode}: {result.tail.error_summary()}"
        )
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
_MEMORY_FIELDS = (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "alias_size_in_bytes",
    "temp_size_in_bytes",
    "generated_code_size_in_bytes",
)
_OOM = (
    # libtpu 0.0.5x: "CompileTimeHbmOom: Ran out of memory on HBM, the total memory required for HLO temporaries (153.07G) exceeds available HBM (31.24G)"
    re.compile(r"Ran out of memory[^\n]*?required[^\n]*?\(([0-9.]+)([KMGT])?\)[^\n]*?available HBM \(([0-9.]+)([KMGT])?\)"),
    # older XLA: "Ran out of memory in memory space hbm. Used 41.25G of 31.25G hbm."
    re.compile(
        r"(?:Ran out of memory|RESOURCE_EXHAUSTED)[^\n]*?(?:Used|used) ([0-9.]+)([KMGT])? ?(?:i?B)? of ([0-9.]+)([KMGT])? ?(?:i?B)?"
    ),
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
    found["per_chip_bytes"] = (
        found.get("argument_size_in_bytes", 0)
        + found.get("output_size_in_bytes", 0)
        - found.get("alias_size_in_bytes", 0)
        + found.get("temp_size_in_bytes", 0)
        + found.get("generated_code_size_in_bytes", 0)
    )
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
    return [model_path, *(maxtext_arg(key, value) for key, value in pairs)]


def fit_check(
    plan: RunPlan, *, tokenizer_dir: str | Path, out: str | Path, fit: dict, clock: Callable[[], float] = time.time
) -> dict:
    """Compile the run's train step ahead of time for its TPU topology (on this CPU) and check it fits in HBM
    (``fit``: ``hbm_gib`` and ``max_fraction`` of ``training.fit``)."""
    started = clock()
    if plan.backend != "tpu":
        raise TrainingError(
            f"run {plan.name}: the fit check compiles for a TPU topology; the run uses the {plan.backend} backend"
        )
    stats = read_tokenizer_stats(tokenizer_dir, error=TrainingError)
    vocab = padded_vocab(stats.vocab_size, int(plan.settings["vocab_multiple"]))
    args = fit_args(plan, model_path=plan.model_path, vocab_size=vocab)
    env = child_env(TPU_SKIP_MDS_QUERY="1", ALLOW_MULTIPLE_LIBTPU_LOAD="true", JAX_PLATFORMS="cpu")
    command = maxtext_command(COMPILE_MODULE, args)
    log.info("running: %s", " ".join(command))
    tail = LineTail(keep=400)
    returncode = run_streaming(command, env=env, on_line=tail)
    text = "\n".join(tail.lines)
    capacity = hbm_gib(plan.accelerator, fit["hbm_gib"])
    oom = parse_oom(text)
    if oom is not None:
        raise TrainingError(
            f"run {plan.name} does not fit {plan.accelerator}: the train step needs {oom[0]:.2f} GiB per chip, a chip has {oom[1]:.2f} GiB; "
            "lower per_device_batch_size (raise gradient_accumulation_steps) or use a larger slice"
        )
    if returncode != 0:
        raise TrainingError(
            f"run {plan.name}: train_compile for {plan.accelerator} failed (code {returncode}): {tail.error_summary()}"
        )
    memory = parse_memory_analysis(text)
    if memory is None:
        raise TrainingError(f"run {plan.name}: train_compile printed no memory analysis; see the job's log")
    needed = memory["per_chip_bytes"] / 2**30
    limit = capacity * float(fit["max_fraction"])
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
