"""What a preempted spot run loses: its place in the data, and the steps since its last checkpoint.

A spot TPU VM can be taken away at any time; the run then resumes from its last
checkpoint (see :mod:`nanogerman.training`). Two settings decide what that costs:

* **Data order.** MaxText's Grain pipeline (``dataset.format: array_record``) saves its
  iterator's position in every checkpoint (the ``iter`` item), so a resumed run sees the
  same batches in the same order as an uninterrupted one. Its tfds pipeline
  (``dataset.format: tfrecord``, the seed's) saves nothing: after a resume it starts
  again from the first example and trains on the start of the corpus twice.
  ``dataset.format: auto`` (the default) therefore picks array_record for a config
  whose TPU slices are spot, tfrecord otherwise (:func:`resolve_dataset_format`), and a
  spot run on a replaying pipeline gets a one-line warning (:func:`replay_warning`).
* **Checkpoint cadence.** A preemption loses up to ``checkpoint_period`` steps.
  :func:`cadence_warning` compares ``checkpoint_period x step time`` with
  ``training.tpu.max_lost_minutes``. The step time is, in this order: the configured
  ``training.tpu.step_seconds``; the median step time of an earlier run of the same
  name on the same accelerator (its ``metrics.jsonl``); or an estimate from the model's training FLOPs per step
  (:func:`train_flops_per_step`), the slice's bf16 peak and ``training.tpu.assumed_mfu``.

:func:`planning_warnings` collects both for the spot runs of a config (the workflow
prints them before any job runs); :func:`job_warnings` repeats a run's own in its job log.
"""

from __future__ import annotations

import functools
import re
import statistics
from collections.abc import Iterable
from pathlib import Path

import yaml

from nanogerman.manifests import ManifestError, read_dataset_manifest, read_train_manifest
from nanogerman.training import (
    RunPlan,
    padded_vocab,
    plan_runs,
    read_jsonl,
    training_section,
)

SPOT = "spot"
AUTO = "auto"
# MaxText dataset_type values a resume does not replay: grain saves its position ("iter") in the checkpoint; synthetic has no order.
EXACTLY_ONCE_TYPES = frozenset({"grain", "synthetic"})
# bf16 peak TFLOP/s of one JAX device: a chip for v4, v5p (megacore), v5e and v6e; one TensorCore (half a chip) for v2 and v3.
PEAK_TFLOPS_PER_DEVICE = {"v2": 22.5, "v3": 61.5, "v4": 275.0, "v5p": 459.0, "v5litepod": 197.0, "v5e": 197.0, "v6e": 918.0}
_FAMILY = re.compile(r"^(v2|v3|v4|v5p|v5litepod|v5e|v6e)-\d+$")
MEASURED_FIRST_STEP = 2  # the first steps of an attempt include compilation: not step time


# --- data order ----------------------------------------------------------------------------


def spot_configured(config: dict) -> bool:
    """True if training.tpu or any run's tpu asks for spot provisioning (whichever backend trains)."""
    training = training_section(config)
    if (training.get("tpu") or {}).get("provisioning") == SPOT:
        return True
    return any((entry.get("tpu") or {}).get("provisioning") == SPOT for entry in training.get("runs") or [])


def resolve_dataset_format(config: dict) -> dict:
    """Replace ``dataset.format: auto`` with array_record (spot slices configured) or tfrecord; returns ``config``.

    The choice ignores training.backend on purpose: the profile switches the backend, and
    the dataset (240 shards for the seed) must not be rebuilt between a local dry run and
    ``--profile profiles/tpu``.
    """
    dataset = config.get("dataset")
    if dataset and dataset.get("format") == AUTO:
        dataset["format"] = "array_record" if spot_configured(config) else "tfrecord"
    return config


def is_spot(plan: RunPlan) -> bool:
    """A run that can be preempted: on the tpu backend with spot provisioning."""
    return plan.backend == "tpu" and (plan.tpu or {}).get("provisioning") == SPOT


def replays_data(dataset_type: str | None) -> bool:
    """True if MaxText's pipeline of this dataset_type starts again from the first example after a resume."""
    return dataset_type not in EXACTLY_ONCE_TYPES


def replay_warning(runs: Iterable[str], dataset_type: str) -> str:
    """One line: what a preemption does to the data of these spot runs, and how to switch."""
    names = ", ".join(runs)
    return (
        f"spot run(s) {names} read the dataset through MaxText's {dataset_type} pipeline, which keeps no position "
        "in the checkpoint: after a preemption the run restarts its data from the first example and sees the start of the "
        "corpus again; set dataset.format: array_record (Grain, exactly-once) to avoid that"
    )


def dataset_type_for_format(file_format: str) -> str:
    """The MaxText dataset_type that the dataset stage writes for a dataset.format (see dataset.manifest_for)."""
    return "grain" if file_format == "array_record" else "tfds"


# --- checkpoint cadence --------------------------------------------------------------------


def cadence_warning(run: str, *, checkpoint_period: int, step_seconds: float, max_lost_minutes: float, source: str) -> str | None:
    """One line with the figures if one checkpoint period takes longer than the bound, else None (a pure function)."""
    period_minutes = checkpoint_period * step_seconds / 60
    if period_minutes <= max_lost_minutes:
        return None
    fitting = max(1, int(max_lost_minutes * 60 // step_seconds))
    return (
        f"run {run} checkpoints every {checkpoint_period} steps x {step_seconds:.3g} s per step ({source}) "
        f"= {format_minutes(period_minutes)}, so a preemption can lose more than training.tpu.max_lost_minutes "
        f"= {max_lost_minutes:g} min; set checkpoint_period to at most {fitting}"
    )


def format_minutes(minutes: float) -> str:
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"


def train_flops_per_step(dims: dict, *, vocab_size: int, max_target_length: int, global_batch_size: int) -> float:
    """Training FLOPs (forward and backward) of one optimizer step of a dense Llama decoder.

    6 x the matmul weights per token (attention, MLP, output layer; embeddings are a lookup),
    plus causal attention: 6 x layers x context x query heads x head_dim per token. The
    same counting as MaxText's ``calculate_tflops_training_per_device`` for dense models.
    """
    width, layers, mlp = dims["base_emb_dim"], dims["base_num_decoder_layers"], dims["base_mlp_dim"]
    query_heads = dims["base_num_query_heads"]
    kv_heads = dims.get("base_num_kv_heads") or query_heads
    head_dim = dims.get("head_dim") or width // query_heads
    gated = len(dims.get("mlp_activations") or ["silu", "linear"])  # 2: gate and up projections (SwiGLU)
    attention = width * head_dim * (2 * query_heads + 2 * kv_heads)  # q, o and k, v
    feed_forward = width * mlp * (gated + 1)
    weights = layers * (attention + feed_forward) + width * vocab_size
    per_token = 6 * weights + 6 * layers * max_target_length * query_heads * head_dim
    return float(per_token) * max_target_length * global_batch_size


def estimate_step_seconds(flops_per_step: float, accelerator_type: str, devices: int, mfu: float) -> float:
    """Seconds per step if the slice's devices run at ``mfu`` of their bf16 peak."""
    match = _FAMILY.match(accelerator_type or "")
    if not match:
        raise ValueError(f"unknown Cloud TPU type {accelerator_type!r}")
    return flops_per_step / (devices * PEAK_TFLOPS_PER_DEVICE[match.group(1)] * 1e12 * mfu)


@functools.lru_cache(maxsize=32)
def _model_file(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


MODEL_KEYS = ("base_emb_dim", "base_num_decoder_layers", "base_num_query_heads", "base_mlp_dim")


def model_dims(plan: RunPlan) -> dict | None:
    """The run's model dimensions: its model YAML with the run's ``extra`` on top; None if the YAML does not give them."""
    try:
        dims = {**_model_file(plan.model_path), **(plan.settings.get("extra") or {})}
    except OSError:
        return None
    return dims if all(isinstance(dims.get(key), int) for key in MODEL_KEYS) else None


def measured_step_seconds(results_dir: str | Path, plan: RunPlan) -> float | None:
    """The median step time of an earlier run of ``plan`` on the same accelerator (its train.json and metrics.jsonl), or None."""
    folder = Path(results_dir) / "train" / plan.name
    try:
        earlier = read_train_manifest(folder / "train.json")
    except ManifestError:
        return None
    if earlier.accelerator != plan.accelerator:
        return None  # e.g. a CPU trial of the same run: its step time says nothing about the slice
    times = [
        float(record["perf/step_time_seconds"])
        for record in read_jsonl(folder / "metrics.jsonl")
        if record.get("step", 0) >= MEASURED_FIRST_STEP and record.get("perf/step_time_seconds")
    ]
    return statistics.median(times) if times else None


def step_seconds(plan: RunPlan, tpu: dict, vocab_size: int | None, results_dir: str | Path) -> tuple[float, str] | None:
    """(seconds per step, where the figure comes from) for a tpu run, or None if there is no way to tell."""
    if tpu.get("step_seconds"):
        return float(tpu["step_seconds"]), "training.tpu.step_seconds"
    measured = measured_step_seconds(results_dir, plan)
    if measured:
        return measured, "measured by an earlier run"
    dims = model_dims(plan)
    if dims is None or not vocab_size:
        return None
    vocab = padded_vocab(vocab_size, int(plan.settings["vocab_multiple"]))
    flops = train_flops_per_step(
        dims,
        vocab_size=vocab,
        max_target_length=int(plan.settings["max_target_length"]),
        global_batch_size=plan.global_batch_size,
    )
    mfu = float(tpu["assumed_mfu"])
    seconds = estimate_step_seconds(flops, plan.accelerator, plan.devices, mfu)
    return seconds, f"estimated: {flops / 1e15:.2f} PFLOP per step on {plan.accelerator} at {mfu:.0%} of its bf16 peak"


def tokenizer_vocab_size(config: dict, plan: RunPlan) -> int | None:
    """The vocabulary size the run's tokenizer entry asks for (None if it names none), for the step time estimate."""
    return next((entry.get("vocab_size") for entry in config.get("tokenizers") or [] if entry["name"] == plan.tokenizer), None)


def run_cadence_warning(plan: RunPlan, *, vocab_size: int | None, results_dir: str | Path) -> str | None:
    """The cadence warning of one spot run, or None (not spot, fast enough, or no step time known)."""
    if not is_spot(plan):
        return None
    tpu = plan.tpu or {}
    found = step_seconds(plan, tpu, vocab_size, results_dir)
    if found is None:
        return None
    seconds, source = found
    return cadence_warning(
        plan.name,
        checkpoint_period=int(plan.settings["checkpoint_period"]),
        step_seconds=seconds,
        max_lost_minutes=float(tpu["max_lost_minutes"]),
        source=source,
    )


# --- what the workflow prints --------------------------------------------------------------


def planning_warnings(config: dict) -> list[str]:
    """One line per problem of the config's spot runs (without a 'warning:' prefix): replayed data (all runs in one line), then each run's cadence."""
    plans = [plan for plan in plan_runs(config) if is_spot(plan)]
    if not plans:
        return []
    warnings = []
    dataset_type = dataset_type_for_format(config["dataset"]["format"])
    if replays_data(dataset_type):
        warnings.append(replay_warning([plan.name for plan in plans], dataset_type))
    warnings.extend(
        line
        for plan in plans
        if (line := run_cadence_warning(plan, vocab_size=tokenizer_vocab_size(config, plan), results_dir=config["results_dir"]))
    )
    return warnings


def job_warnings(plan: RunPlan, dataset_manifest: str | Path, *, vocab_size: int | None, results_dir: str | Path) -> list[str]:
    """A run's own warnings for its job log; the data pipeline is read from the dataset manifest the job uses.

    An unreadable manifest gives no data warning here: the training job itself stops on it with one line.
    """
    if not is_spot(plan):
        return []
    warnings = []
    try:
        dataset_type = read_dataset_manifest(dataset_manifest).maxtext.get("dataset_type")
    except ManifestError:
        dataset_type = "grain"
    if replays_data(dataset_type):
        warnings.append(replay_warning([plan.name], dataset_type))
    if (line := run_cadence_warning(plan, vocab_size=vocab_size, results_dir=results_dir)) is not None:
        warnings.append(line)
    return warnings
