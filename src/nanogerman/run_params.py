"""A training run's plan as its jobs' params: what changes the result reruns them, how the backend is driven does not.

Snakemake reruns a job when one of its params changes (``--rerun-triggers params``, on by
default). It compares the ``repr`` of the params of builtin types (str, numbers, lists,
dicts, …) with what it recorded when the job last ran, and records no param of another
type. So the rules give a job its :class:`~nanogerman.job.RunPlan` in two params:

- :func:`plan_param`, plain dicts: everything that changes what the job produces (the merged
  settings, the batch geometry, the backend and hardware, and the keys of ``training.tpu`` in
  :data:`RESULT_TPU_KEYS`). A change reruns the job. The run's name hash (``run_name``, see
  :mod:`nanogerman.job`) covers the subset that changes the trained weights, so a rerun with
  other settings starts a fresh run instead of resuming an incompatible checkpoint.
- :func:`backend_param`, wrapped in :class:`Unrecorded`: how the job is driven, not what it
  trains (the keys of ``training.tpu`` in :data:`BACKEND_TPU_KEYS`, and the run's position in
  ``training.runs``, used in messages only). A change reruns nothing; the next job that runs
  anyway, or a rerun of a job that stopped, uses the new values.

:func:`plan_from_params` puts the two together again inside the job. ``training.local`` needs
no split: its ``hardware`` and ``devices`` change the result and are plan fields; ``threads``
is the rules' ``threads:``, not a param.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from nanogerman.job import RunPlan
from nanogerman.provenance import file_sha256
from nanogerman.tpu_run import requirements_location
from nanogerman.training import resolve_model_path

# training.tpu keys that change what a run trains, or how fast its numbers come out the same:
RESULT_TPU_KEYS = (
    "accelerator_type",  # the device count and kind: batch geometry and numerics
    "runtime_version",  # the TPU VM image and its drivers
    "requirements",  # the pinned packages the workers train with (the path here; the content: requirements_input)
    "python",  # the Python of the workers' environment
)
# training.tpu keys that only decide where and how the job drives the slice; changing one reruns nothing:
BACKEND_TPU_KEYS = (
    "project",  # where the slice is: the same training anywhere
    "zone",
    "provisioning",  # spot, on-demand or reserved: a preempted run resumes from its checkpoint (data order: see preemption.py)
    "name_prefix",  # the queued resource's name
    "keep",  # whether the slice is deleted afterwards
    "keep_after_smoke",
    "poll_seconds",  # how often the controller looks
    "wait_timeout_minutes",  # how long it waits for a slice
    "max_restarts",  # how many preemptions and dropped ssh calls one job survives
    "heartbeat_seconds",  # how often the workers report
    "stale_minutes",  # when a silent worker counts as dead
    "uv_version",  # the installer of the pinned packages, not the packages
    "max_lost_minutes",  # the planning warnings' checkpoint cadence check
    "step_seconds",
    "assumed_mfu",
)


@dataclasses.dataclass(frozen=True)
class Unrecorded:
    """A param value Snakemake does not record (not a builtin type): changing it reruns no job."""

    value: Any


# The settings a smoke job and a fit job read (job.smoke_args, training.fit_args): the others do not rerun them.
SMOKE_SETTINGS = ("model", "max_target_length", "dtype", "extra")
FIT_SETTINGS = ("model", "max_target_length", "dtype", "steps", "extra", "vocab_multiple")


def plan_param(plan: RunPlan, settings: tuple[str, ...] | None = None) -> dict:
    """The result-changing part of ``plan`` as builtin values, for a rule's ``params``; only ``settings`` if given."""
    fields = dataclasses.asdict(plan)
    del fields["position"]
    # settings["model"] names the model file; its absolute path would rerun every job of a moved checkout
    del fields["model_path"]
    if settings is not None:  # a job that reads fewer settings: another setting's change must not rerun it
        fields["settings"] = {key: fields["settings"][key] for key in settings}
    tpu = fields.pop("tpu")
    # a key in neither list (a new one) counts as result-changing: a needless rerun beats a stale result
    fields["tpu"] = None if tpu is None else {key: value for key, value in tpu.items() if key not in BACKEND_TPU_KEYS}
    return fields


# Left out of a checkpoint's identity: the run's length and cadences. A run trained further keeps the
# checkpoints evaluated before (the train manifest is an ancient() input of the checkpoint jobs);
# `steps` is in the run's hash, so those belong to the earlier run, as the README says.
NOT_CHECKPOINT_IDENTITY = ("steps", "checkpoint_period", "eval_interval", "eval_steps")


def checkpoint_identity(plan: RunPlan) -> dict:
    """The run settings that make its checkpoint at a step what it is, for the checkpoint jobs' params: a changed
    learning rate, tokenizer or model re-evaluates the run's intermediate checkpoints.

    The model file counts by its content too (``model_sha256``): a file edited under the same name
    trains a new run (its text is in the run's hash), whose checkpoints must not reuse the old ones'
    evaluations. A missing file has none (the training job then says it is missing)."""
    fields = plan_param(plan)
    fields["settings"] = {key: value for key, value in fields["settings"].items() if key not in NOT_CHECKPOINT_IDENTITY}
    fields["model_sha256"] = _sha256_if_file(plan.model_path)
    return fields


def checkpoint_key(plan: RunPlan) -> str:
    """8 hex digits of :func:`checkpoint_identity` (the model file's name and content, not its absolute path):
    the folder of a run's intermediate checkpoint evaluations, so a run with other settings never mixes with
    earlier results."""
    return _short_hash(checkpoint_identity(plan))


def requirements_input(plan: RunPlan) -> list[str]:
    """The tpu workers' requirements file as an input of the jobs that install it (the smoke and training jobs
    of a tpu run): an edited file reruns them like an edited model file. Nothing for a local run, or for a
    file that is not there (the job then stops with its own one-line error)."""
    if plan.tpu is None:
        return []
    path = requirements_location(plan.tpu)
    return [str(path)] if path.is_file() else []


def training_key(plan: RunPlan) -> str:
    """8 hex digits of what reruns a run's training job: its :func:`plan_param` and the content of the files it
    reads (the model file; for a tpu run the requirements file). The name of the run's checks gate (rule
    train_checks in rules/train.smk): the checks are ancient() inputs of the training, and Snakemake 9.15 does
    not look at a job's own reasons while the job behind such an input reruns, so a run whose key changed
    waits for a gate that is not there yet, and Snakemake plans it for that."""
    identity = {
        "plan": plan_param(plan),
        "model_sha256": _sha256_if_file(plan.model_path),
        "requirements_sha256": [file_sha256(path) for path in requirements_input(plan)],
    }
    return _short_hash(identity)


def _short_hash(value: dict) -> str:
    """8 hex digits of the sha256 of ``value`` as JSON with sorted keys (a folder or file name part)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()[:8]


def _sha256_if_file(path: str) -> str | None:
    return file_sha256(path) if Path(path).is_file() else None


def backend_param(plan: RunPlan) -> Unrecorded:
    """The rest of ``plan``: how the backend drives the job, which must not rerun it."""
    tpu = None if plan.tpu is None else {key: value for key, value in plan.tpu.items() if key in BACKEND_TPU_KEYS}
    return Unrecorded({"position": plan.position, "tpu": copy.deepcopy(tpu)})


def plan_from_params(plan: dict, backend: Unrecorded) -> RunPlan:
    """The job's :class:`RunPlan` from its two params (:func:`plan_param`, :func:`backend_param`)."""
    fields = copy.deepcopy(plan)
    tpu = fields.pop("tpu")
    if tpu is not None:
        tpu = {**tpu, **(backend.value["tpu"] or {})}
    model_path = resolve_model_path(fields["settings"]["model"])
    return RunPlan(**fields, model_path=model_path, tpu=tpu, position=backend.value["position"])
