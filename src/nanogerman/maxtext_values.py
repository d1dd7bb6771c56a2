"""MaxText ``key=value`` arguments that MaxText's own parser reads back unchanged.

MaxText reads its command-line settings with ``OmegaConf.from_cli``: each value is
parsed as YAML (OmegaConf's loader), then every string holding ``${`` is resolved as
an interpolation. So a bare value is not taken literally: ``scratch/res #1`` loses
`` #1`` (a YAML comment), ``a: b`` becomes a mapping, ``${x}`` is replaced. This module
writes each value so that it survives:

- strings go in bare when YAML gives them back unchanged, else as a YAML double-quoted
  scalar (JSON's string syntax, which YAML reads the same way);
- a string with ``${`` is refused, since MaxText resolves its settings more than once
  and an escaped interpolation would not survive the second pass;
- every rendered argument is read back with the installed OmegaConf, exactly as MaxText
  reads it, and refused with one line (the key and the character) if it differs.

:data:`RESERVED` lists the MaxText settings the project sets itself, which
``training.*.extra`` must not override (the last ``key=value`` wins, so ``train.json``
would record settings MaxText did not use).
"""

from __future__ import annotations

import json
import math
from typing import Any

from nanogerman.errors import StageError

# MaxText setting -> the config key that sets it.
RESERVED: dict[str, str] = {
    "run_name": "the run's name (training.runs[].name)",
    "base_output_directory": "training.checkpoint_dir",
    "steps": "steps",
    "learning_rate": "learning_rate",
    "lr_schedule_type": "lr_schedule",
    "warmup_steps_fraction": "warmup_steps_fraction",
    "learning_rate_final_fraction": "learning_rate_final_fraction",
    "per_device_batch_size": "per_device_batch_size or global_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "max_target_length": "max_target_length",
    "packing": "packing",
    "num_epoch": "epochs",
    "init_weights_seed": "seed",
    "data_shuffle_seed": "seed",
    "dtype": "dtype",
    "vocab_size": "the tokenizer's vocab_size (and vocab_multiple)",
    "tokenizer_type": "the run's tokenizer",
    "tokenizer_path": "the run's tokenizer",
    "enable_checkpointing": "checkpoint_period",
    "checkpoint_period": "checkpoint_period",
    "async_checkpointing": "async_checkpointing",
    "eval_interval": "eval_interval",
    "eval_steps": "eval_steps",
    "metrics_file": "nothing (the workflow writes results/train/<run>/metrics.jsonl)",
    "hardware": "training.local.hardware or training.backend",
    "skip_jax_distributed_system": "training.local.hardware",
    "hf_access_token": "nothing (MaxText logs its settings; the workflow never passes a token)",
    "dataset_type": "the dataset section (dataset.format)",
    "dataset_path": "the dataset section (results_dir, dataset.publish_to)",
    "dataset_name": "dataset.name and dataset.version",
    "eval_dataset_name": "dataset.name and dataset.version",
    "train_split": "the dataset section",
    "eval_split": "the dataset section",
    "grain_train_files": "the dataset section (dataset.format)",
    "grain_eval_files": "the dataset section (dataset.format)",
    "grain_file_type": "dataset.format",
}


class MaxTextValueError(StageError):
    """A value MaxText's parser would not read back as it was written."""


def format_value(value: Any) -> str:
    """A non-string config value as YAML reads it: true/false, null, numbers, JSON lists and mappings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if value is None:
        return "null"
    return str(value)


def parsed_back(argument: str) -> Any:
    """What MaxText's ``OmegaConf.from_cli`` (then ``to_container(resolve=True)``) makes of one ``key=value``."""
    from omegaconf import OmegaConf

    key = argument.split("=", 1)[0]
    return OmegaConf.to_container(OmegaConf.from_dotlist([argument]), resolve=True)[key]


def maxtext_arg(key: str, value: Any, where: str | None = None) -> str:
    """``key=value`` for MaxText's command line, checked to parse back to ``value``; else one-line error naming the key."""
    name = where or key
    if isinstance(value, str) and "${" in value:
        raise MaxTextValueError(
            f"{name} is {value!r}: '${{' would be read as an interpolation by MaxText's config parser (OmegaConf); "
            "use a path or value without '${'"
        )
    text = format_value(value)
    if isinstance(value, str) and _reads_back(f"{key}={text}", value) is False:
        text = json.dumps(value, ensure_ascii=False)  # a YAML double-quoted scalar
    argument = f"{key}={text}"
    if _reads_back(argument, value) is False:
        raise MaxTextValueError(
            f"{name} is {value!r}: MaxText's config parser (OmegaConf) would read it as {_safe_parse(argument)!r} "
            f"(the character {_culprit(value)!r}); use a path or value without it"
        )
    return argument


def maxtext_value(value: Any, where: str = "a MaxText setting") -> str:
    """The value part of :func:`maxtext_arg` (for command lines built as ``{key: rendered value}``)."""
    return maxtext_arg("value", value, where).split("=", 1)[1]


def check_value(key: str, value: Any, where: str | None = None) -> None:
    """Raise :class:`MaxTextValueError` unless ``value`` can be passed to MaxText as ``key=value`` intact."""
    maxtext_arg(key, value, where)


def check_extra(extra: dict, where: str) -> None:
    """Refuse ``extra`` keys the project sets itself, pointing to the config key to use instead."""
    for key, value in (extra or {}).items():
        if key in RESERVED:
            raise MaxTextValueError(
                f"config error: {where}.extra.{key} is a setting the workflow makes itself; use {RESERVED[key]} instead"
            )
        check_value(key, value, f"config error: {where}.extra.{key}")


def _reads_back(argument: str, value: Any) -> bool | None:
    """True if the argument parses back to ``value``; False if not; None for values YAML cannot compare (floats nan)."""
    try:
        got = parsed_back(argument)
    except Exception:  # noqa: BLE001 (any parse error means: not intact)
        return False
    if isinstance(value, str):
        return got == value
    if isinstance(value, float) and math.isnan(value):
        return None
    return got == value or not isinstance(value, (str, list, dict))


def _safe_parse(argument: str) -> Any:
    try:
        return parsed_back(argument)
    except Exception as error:  # noqa: BLE001
        return f"an error ({type(error).__name__})"


def _culprit(value: Any) -> str:
    """The first character of ``value`` that YAML or OmegaConf treat specially, for the error line."""
    text = str(value)
    for pattern in (" #", ": ", "${", "\\", '"', "'", "\n", "\t", "#", ":", "[", "{", "&", "*", "!", "|", ">", "%", "@", "`"):
        if pattern in text:
            return pattern
    return text[:1]
