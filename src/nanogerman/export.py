"""Export stage: a MaxText (orbax) checkpoint to a Hugging Face ``LlamaForCausalLM`` folder, checked by logits.

One job per training run (:func:`export_run`):

1. MaxText's own converter (``python -m maxtext.checkpoint_conversion.to_huggingface``)
   maps the weights with its ``llama3.1-*`` mapping (``model_name=llama3.1-8b
   override_model_config=true`` plus the run's model settings on the command line,
   ``--override_model_architecture`` so the Hugging Face config takes the run's sizes).
   The project's models use ``rope_type: llama3.1`` with ``rope_use_scale: false``:
   Llama-3.1's rotary layout without its frequency scaling, i.e. plain RoPE.
2. ``config.json`` is fixed (:func:`fixed_hf_config`): bos/eos/pad ids from the run's
   tokenizer (the converter keeps Llama-3.1's 128000/128001), plain RoPE with the run's
   theta, the trained context length; the tokenizer files are the tokenizer stage's own;
   ``generation_config.json`` is written.
3. The logits check (:func:`nanogerman.export_check.verify_export`): MaxText's logits
   (:mod:`nanogerman.maxtext_logits`) and transformers' logits for the same token ids must
   agree to ``tolerance`` (max absolute difference, float32). The figures go to
   ``logits_check.json`` in the folder; a mismatch fails the job and nothing is left behind
   (the folder is renamed into place only after the check).

Steps 1 and MaxText's half of 3 run in one child process (:mod:`nanogerman.maxtext_export`,
started by :mod:`nanogerman.export_children`): importing MaxText, JAX and TensorFlow costs about
20 s of a core, paid once instead of twice.

:func:`nanogerman.export_publish.publish_export` uploads a finished folder to a Hub model repo (off by default).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nanogerman.atomic import atomic_path, write_json
from nanogerman.errors import first_line
from nanogerman.export_check import DEFAULT_TOLERANCE, ExportError, check_ids, verify_export
from nanogerman.export_children import Runner, child_env, run_command
from nanogerman.manifests import read_tokenizer_stats, read_train_manifest
from nanogerman.maxtext_export import CONVERT_FAILED, FORWARD_FAILED
from nanogerman.maxtext_values import format_value, maxtext_value
from nanogerman.provenance import package_versions
from nanogerman.scratch import scratch_dir

log = logging.getLogger(__name__)

CONVERT_MODULE = "maxtext.checkpoint_conversion.to_huggingface"
LOGITS_MODULE = "nanogerman.maxtext_logits"
EXPORT_MODULE = "nanogerman.maxtext_export"  # both in one process: MaxText is imported once
CONVERTER_MODEL_NAME = "llama3.1-8b"  # the MaxText name whose Llama weight mapping the converter applies
DEFAULT_CHECK_LENGTH = 64
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
VERSIONED_PACKAGES = ("maxtext", "jax", "orbax-checkpoint", "transformers", "torch", "safetensors")
# Training-run arguments that do not describe the model: dropped before the converter and the check.
NOT_MODEL_KEYS = frozenset(
    {
        "run_name",
        "base_output_directory",
        "tokenizer_type",
        "tokenizer_path",
        "steps",
        "learning_rate",
        "lr_schedule_type",
        "warmup_steps_fraction",
        "learning_rate_final_fraction",
        "per_device_batch_size",
        "gradient_accumulation_steps",
        "max_target_length",
        "packing",
        "num_epoch",
        "init_weights_seed",
        "data_shuffle_seed",
        "enable_checkpointing",
        "checkpoint_period",
        "async_checkpointing",
        "eval_interval",
        "eval_steps",
        "metrics_file",
        "hardware",
        "skip_jax_distributed_system",
        "load_parameters_path",
        "load_full_state_path",
        "dtype",
        "weight_dtype",
        "model_name",
        "override_model_config",
        "enable_tensorboard",
        "compile_topology",
        "compile_topology_num_slices",
        "train_split",
        "eval_split",
        "add_bos",
        "add_eos",
    }
)
NOT_MODEL_PREFIXES = ("dataset_", "hf_", "grain_", "tfds_", "eval_", "tokenizer_", "ici_", "dcn_", "profiler")

# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportInputs:
    """What the export of one run reads: its train.json, model settings and tokenizer."""

    run: str
    manifest: dict
    model_path: str
    model_settings: dict  # the model YAML's keys, overridden by the run's MaxText arguments
    train_args: dict  # the run's MaxText key=value arguments
    checkpoint: str
    step: int
    tokenizer_dir: Path
    tokenizer_stats: dict

    @property
    def vocab_size(self) -> int:
        return int(self.train_args.get("vocab_size") or self.manifest["vocab_size"])

    @property
    def max_length(self) -> int:
        return int(self.manifest.get("max_target_length") or self.train_args.get("max_target_length") or 2048)


def load_manifest(path: str | Path) -> dict:
    """A training run's ``train.json``, with the keys the export reads."""
    manifest = read_train_manifest(path, error=ExportError)
    manifest.require("run", "maxtext_args", "checkpoint_uri", "checkpoint_dir", "checkpoint_step")
    return manifest.data


def split_maxtext_args(args: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``[model.yml, key=value, …]`` → (model path, {key: value})."""
    if not args or "=" in args[0]:
        raise ExportError("the training manifest's maxtext_args do not start with the model YAML; rerun the training stage")
    pairs = {}
    for argument in args[1:]:
        key, separator, value = argument.partition("=")
        if separator:
            pairs[key] = value
    return args[0], pairs


def read_model_settings(model_path: str | Path) -> dict:
    """The keys of a MaxText model YAML (without ``base_config``)."""
    try:
        settings = yaml.safe_load(Path(model_path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ExportError(f"{model_path}: cannot read the run's model file ({first_line(error)})") from None
    if not isinstance(settings, dict):
        raise ExportError(f"{model_path}: the model file is not a mapping of MaxText settings")
    settings.pop("base_config", None)
    return settings


def checkpoint_items(manifest: dict, step: int | None = None) -> tuple[str, int]:
    """The checkpoint to export: the run's final one, or ``step``; (``…/checkpoints/<step>/items``, step)."""
    if step is None:
        return manifest["checkpoint_uri"], int(manifest["checkpoint_step"])
    return f"{manifest['checkpoint_dir'].rstrip('/')}/{int(step)}/items", int(step)


def check_checkpoint_exists(run: str, checkpoint: str) -> None:
    """Fail with one line when a local checkpoint folder is missing (gs:// is left to orbax)."""
    if checkpoint.startswith("gs://"):
        return
    items = Path(checkpoint)
    step_dir = items.parent
    if not items.is_dir():
        steps = (
            sorted(int(p.name) for p in step_dir.parent.glob("*") if p.name.isdigit() and (p / "items").is_dir())
            if step_dir.parent.is_dir()
            else []
        )
        found = f"; steps found: {', '.join(map(str, steps))}" if steps else f"; {step_dir.parent} holds no checkpoints"
        raise ExportError(f"run {run}: checkpoint {checkpoint} not found{found}")


def load_inputs(manifest_path: str | Path, tokenizer_dir: str | Path, *, step: int | None = None) -> ExportInputs:
    manifest = load_manifest(manifest_path)
    run = manifest["run"]
    model_path, train_args = split_maxtext_args(manifest["maxtext_args"])
    # A tpu run's arguments name the workers' copy of the model file; train.json also records the local one.
    model_path = (manifest.get("model") or {}).get("config") or model_path
    settings = {**read_model_settings(model_path), **{key: _parse_value(value) for key, value in train_args.items()}}
    check_exportable(run, settings)
    checkpoint, chosen = checkpoint_items(manifest, step)
    check_checkpoint_exists(run, checkpoint)
    tokenizer_dir = Path(tokenizer_dir)
    stats = read_tokenizer_stats(tokenizer_dir, error=ExportError).data
    for name in TOKENIZER_FILES:
        if not (tokenizer_dir / name).is_file():
            raise ExportError(f"{tokenizer_dir}: no {name}; rerun the tokenizer stage")
    return ExportInputs(run, manifest, model_path, settings, train_args, checkpoint, chosen, tokenizer_dir, stats)


def check_exportable(run: str, settings: dict) -> None:
    """The converter's Llama mapping fits only Llama decoders with an untied output layer and plain RoPE."""
    block = settings.get("decoder_block", "llama2")
    if block != "llama2":
        raise ExportError(f"run {run}: decoder_block is {block!r}; the export writes LlamaForCausalLM and needs 'llama2'")
    if _truthy(settings.get("logits_via_embedding", False)):
        raise ExportError(f"run {run}: logits_via_embedding is true (tied output layer); the export expects an untied one")
    rope = str(settings.get("rope_type", "default"))
    if not rope.startswith("llama3.1") or _truthy(settings.get("rope_use_scale", True)):
        raise ExportError(
            f"run {run}: rope_type {rope!r} with rope_use_scale {settings.get('rope_use_scale', True)!r}; the export maps "
            "Llama-3.1's rotary layout without scaling: set rope_type 'llama3.1' and rope_use_scale false (see config/models/)"
        )


# --- MaxText command lines ----------------------------------------------------------------------


def model_pairs(inputs: ExportInputs) -> dict[str, str]:
    """The run's model-describing MaxText arguments: model YAML keys, then the run's own (extras included)."""
    pairs = {key: format_value(value) for key, value in read_model_settings(inputs.model_path).items()}
    for key, value in inputs.train_args.items():
        if key in NOT_MODEL_KEYS or key.startswith(NOT_MODEL_PREFIXES):
            continue
        pairs[key] = value
    pairs["vocab_size"] = str(inputs.vocab_size)
    return pairs


def conversion_command(inputs: ExportInputs, out_dir: str | Path, *, python: str | None = None) -> list[str]:
    """``python -m maxtext.checkpoint_conversion.to_huggingface`` for the run's checkpoint, into ``out_dir``."""
    pairs = {
        "model_name": CONVERTER_MODEL_NAME,
        "override_model_config": "true",  # command-line keys win over llama3.1-8b.yml
        **model_pairs(inputs),
        "load_parameters_path": maxtext_value(inputs.checkpoint, "the run's checkpoint path"),
        "weight_dtype": "float32",
        "base_output_directory": maxtext_value(str(out_dir), "the export folder"),
        "run_name": f"export-{inputs.run}",
        "hardware": "cpu",
        "skip_jax_distributed_system": "true",
    }
    pairs.setdefault("scan_layers", "true")
    return [
        python or sys.executable,
        "-m",
        CONVERT_MODULE,
        inputs.model_path,
        *(f"{key}={value}" for key, value in pairs.items()),
        "--override_model_architecture",
        f"--hf_model_path={inputs.tokenizer_dir.resolve()}",
    ]


def logits_command(
    inputs: ExportInputs,
    ids_path: str | Path,
    logits_path: str | Path,
    *,
    batch: int,
    length: int,
    scratch: str | Path,
    python: str | None = None,
) -> list[str]:
    """MaxText's forward pass on the check's ids, in float32, with the run's model (not the converter's)."""
    pairs = {
        **model_pairs(inputs),
        "load_parameters_path": maxtext_value(inputs.checkpoint, "the run's checkpoint path"),
        "per_device_batch_size": str(batch),
        "max_target_length": str(length),
        "dtype": "float32",
        "weight_dtype": "float32",
        "matmul_precision": "highest",
        "enable_checkpointing": "false",
        "dataset_type": "synthetic",
        "run_name": f"logits-{inputs.run}",
        "base_output_directory": maxtext_value(str(scratch), "the system's temporary folder"),
        "hardware": "cpu",
        "skip_jax_distributed_system": "true",
    }
    return [
        python or sys.executable,
        "-m",
        LOGITS_MODULE,
        str(ids_path),
        str(logits_path),
        inputs.model_path,
        *(f"{key}={value}" for key, value in pairs.items()),
    ]


def export_command(convert: list[str], forward: list[str]) -> list[str]:
    """One child for both: ``python -m nanogerman.maxtext_export <logits arguments> --convert <converter arguments>``."""
    return [convert[0], "-m", EXPORT_MODULE, *forward[3:], "--convert", *convert[3:]]


# --- writing the folder ------------------------------------------------------------------------


def fixed_hf_config(config: dict, inputs: ExportInputs) -> dict:
    """config.json as the converter wrote it, with the run's special tokens, plain RoPE and context length."""
    fixed = dict(config)
    stats = inputs.tokenizer_stats
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        fixed[key] = stats.get(key)
    theta = float(inputs.model_settings.get("rope_max_timescale", 10_000))
    fixed["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    fixed.pop("rope_scaling", None)
    fixed.pop("rope_theta", None)
    fixed["max_position_embeddings"] = inputs.max_length
    fixed["vocab_size"] = inputs.vocab_size
    fixed["dtype"] = "float32"
    fixed["tie_word_embeddings"] = False
    fixed["architectures"] = ["LlamaForCausalLM"]
    return fixed


def generation_config(inputs: ExportInputs) -> dict:
    stats = inputs.tokenizer_stats
    return {
        "bos_token_id": stats.get("bos_token_id"),
        "eos_token_id": stats.get("eos_token_id"),
        "pad_token_id": stats.get("pad_token_id"),
        "max_length": inputs.max_length,
        "transformers_version": package_versions(["transformers"])["transformers"],
    }


def finish_folder(folder: Path, inputs: ExportInputs) -> None:
    """Fix config.json, put the tokenizer stage's own files in, write generation_config.json, normal file modes."""
    config_path = folder / "config.json"
    if not config_path.is_file() or not list(folder.glob("*.safetensors")):
        raise ExportError(f"run {inputs.run}: the converter wrote no config.json or safetensors weights; see the job's log")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    _write(config_path, fixed_hf_config(config, inputs))
    for name in TOKENIZER_FILES:
        shutil.copyfile(inputs.tokenizer_dir / name, folder / name)
    _write(folder / "generation_config.json", generation_config(inputs))
    usual_modes(folder)


def usual_modes(folder: Path) -> None:
    """rw-r--r-- files (umask permitting): the converter writes them private; atomic_path already fixes the folder."""
    umask = _umask()
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --- the job -----------------------------------------------------------------------------------


def export_run(
    manifest_path: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    *,
    step: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    check_length: int = DEFAULT_CHECK_LENGTH,
    runner: Runner = run_command,
    python: str | None = None,
    logits_out: str | Path | None = None,
    clock: Callable[[], float] = time.time,
) -> dict:
    """Convert one run's checkpoint into ``out_dir`` (a Hugging Face folder) and check it; returns the check's report.

    ``runner`` runs each child command (tests replace it); ``logits_out`` keeps MaxText's
    logits of the check as a ``.npy`` file (they are not part of the export).
    """
    started = clock()
    inputs = load_inputs(manifest_path, tokenizer_dir, step=step)
    length = max(2, min(int(check_length), inputs.max_length))
    ids = check_ids(inputs.tokenizer_dir, inputs.vocab_size, length)
    out_dir = Path(out_dir)
    with scratch_dir("export") as scratch, atomic_path(out_dir, directory=True) as folder:
        import numpy as np

        scratch = Path(scratch)
        np.save(scratch / "ids.npy", ids)
        env = child_env()
        convert = conversion_command(inputs, folder, python=python)
        forward = logits_command(
            inputs,
            scratch / "ids.npy",
            scratch / "logits.npy",
            batch=len(ids),
            length=length,
            scratch=scratch / "maxtext",
            python=python,
        )
        code, line = runner(export_command(convert, forward), env)
        if code == CONVERT_FAILED:
            raise ExportError(f"run {inputs.run}: MaxText's converter failed: {line}")
        if code == FORWARD_FAILED:
            raise ExportError(f"run {inputs.run}: MaxText's forward pass for the logits check failed: {line}")
        if code != 0:
            raise ExportError(f"run {inputs.run}: the export's MaxText process failed (exit code {code}): {line}")
        finish_folder(folder, inputs)
        reference = np.load(scratch / "logits.npy")
        if logits_out is not None:
            np.save(logits_out, reference)
        figures = verify_export(folder, reference, ids, tolerance=tolerance, run=inputs.run)
        report = {
            "run": inputs.run,
            "checkpoint": inputs.checkpoint,
            "checkpoint_step": inputs.step,
            "final_step": inputs.manifest.get("final_step"),
            "tokenizer": str(inputs.tokenizer_dir),
            "logits_check": {**figures, "token_ids": ids.tolist()},
            "converter": [CONVERT_MODULE, *convert[3:]],
            "seconds": round(clock() - started, 3),
            "versions": package_versions(VERSIONED_PACKAGES),
        }
        write_json(folder / "logits_check.json", report)
    log.info(
        "run %s: exported step %d to %s; max |logit difference| %.3g (tolerance %g)",
        inputs.run,
        inputs.step,
        out_dir,
        figures["max_abs_diff"],
        tolerance,
    )
    return report


# --- small helpers ------------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
