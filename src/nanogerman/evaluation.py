"""Evaluation stage: lm-eval on German tasks and bits per byte on held-out text, per model.

A model is an exported run (``results/hf/<run>/``) or a reference model (a Hub id or a
local folder, ``evaluation.reference_models``). Per model, two result files in lm-eval's
results shape (``results[task]["<metric>,none"]``, what the report reads):

- :func:`run_lm_eval`: lm-eval's Python API (``simple_evaluate``) on the configured tasks
  and the generated next-passage task; upstream tasks given ``evaluation.local_data``
  run on local files through an override (:func:`nanogerman.offline_tasks.local_override_yaml`).
- :func:`bits_per_byte`: the model's negative log-likelihood of the held-out documents in
  bits, divided by their UTF-8 bytes, so tokenizers of any vocabulary compare. Each
  document starts after the BOS token (as in training) and is scored in windows of the
  model's context, each window conditioned on the token before it (lm-eval's rolling
  windows). A model that knows nothing scores ``log2(V) × tokens per byte`` (uniform over
  its V-token vocabulary; ``uniform_bits_per_byte`` in the result); text that is not
  compressed at all would be 8.

Which models are evaluated (from the config): :mod:`nanogerman.evaluation_config`; the
summary table of all results: :mod:`nanogerman.evaluation_summary`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from nanogerman.atomic import write_json
from nanogerman.clean_subsets import write_clean_tasks
from nanogerman.errors import StageError, first_line
from nanogerman.offline_tasks import generated_task_yaml
from nanogerman.provenance import package_versions
from nanogerman.schema import schema_defaults
from nanogerman.scratch import scratch_dir
from nanogerman.suites import (
    chance_levels,
    find_yaml,
    item_scores,
    write_task_definitions,
)

log = logging.getLogger(__name__)

BPB_TASK = "heldout_bpb"  # the task name under which bits per byte appear in the results
VERSIONED_PACKAGES = ("lm_eval", "transformers", "torch", "datasets")


class EvaluationError(StageError):
    """An evaluation cannot run as configured."""


class ModelLoadError(EvaluationError):
    """A model (an export or a reference) cannot be loaded."""


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: an exported run's folder, or a reference model (Hub id or local folder)."""

    name: str
    path: str
    kind: str = "run"  # "run" or "reference"
    revision: str | None = None
    trust_remote_code: bool = False

    @property
    def is_local(self) -> bool:
        return Path(self.path).is_dir()

    def describe(self) -> str:
        return (
            f"{self.kind} model {self.name!r} ({self.path}{'@' + self.revision if self.revision and not self.is_local else ''})"
        )


@dataclass(frozen=True)
class ForwardSettings:
    """The ``evaluation`` settings a forward pass reads (loading a model, bits per byte); the defaults are the
    schema's (:meth:`from_schema`)."""

    batch_size: int
    device: str
    dtype: str

    @classmethod
    def from_config(cls, section: dict) -> Self:
        """From a validated config's ``evaluation`` section (every key filled in)."""
        return cls(**{field.name: section[field.name] for field in dataclasses.fields(cls)})

    @classmethod
    def from_schema(cls, **changes: Any) -> Self:
        """The schema's defaults, with ``changes`` on top (tests, benchmarks); an unknown change is a TypeError."""
        return dataclasses.replace(cls.from_config(schema_defaults("evaluation")), **changes)

    def as_param(self) -> dict:
        """These settings as a dict, for a rule's ``params``: Snakemake sees a change in a dict, not in an object."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EvalSettings(ForwardSettings):
    """``evaluation`` settings that apply to every model: the forward pass's and lm-eval's."""

    limit: int | None
    num_fewshot: int
    seed: int
    bootstrap_iters: int  # lm-eval's draws for the stderr of perplexity and mcc (means have a closed form)


def reference_entry(config: dict, name: str) -> dict | None:
    """The ``evaluation.reference_models`` entry called ``name`` (its path, revision, trust_remote_code), or None."""
    for entry in (config.get("evaluation") or {}).get("reference_models") or []:
        if entry["name"] == name:
            return dict(entry)
    return None


def model_spec_of(name: str, reference: dict | None, run_folder: str | None = None) -> ModelSpec:
    """The model called ``name``: the reference model ``reference`` if given, else the run's export in ``run_folder``."""
    if reference is not None:
        return ModelSpec(name, reference["path"], "reference", reference.get("revision"), bool(reference["trust_remote_code"]))
    if run_folder is None:
        raise EvaluationError(
            f"config error: unknown model {name!r}; it is neither a training run nor in evaluation.reference_models"
        )
    return ModelSpec(name, str(run_folder), "run")


def model_spec(config: dict, name: str, run_folder: str | None = None) -> ModelSpec:
    """The model called ``name``: a reference model of ``evaluation.reference_models``, else the run's export."""
    return model_spec_of(name, reference_entry(config, name), run_folder)


# --- loading --------------------------------------------------------------------------------


def hub_offline_if_local(spec: ModelSpec, *, hub_data: bool = False) -> None:
    """A local model and no task data from the Hub: keep huggingface_hub and datasets off the network.

    Call it first thing in a job's process, before huggingface_hub is imported: it changes
    this process's environment.
    """
    if spec.is_local and not hub_data:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


# lm-eval warnings that are expected here (a short context, 0-shot tasks): kept in the job's log, not on the terminal.
_EXPECTED_WARNINGS = ("exceeds model's maximum length", "Overwriting default num_fewshot")


class _Demote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and any(text in record.getMessage() for text in _EXPECTED_WARNINGS):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_job() -> None:
    """For a job's process: no progress bars, torch's pynvml notice hidden, lm-eval's expected warnings to the log only."""
    import warnings

    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", message="The pynvml package is deprecated", category=FutureWarning)
    for name in ("lm_eval", "lm_eval.models.huggingface", "lm_eval.evaluator"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _Demote) for existing in logger.filters):
            logger.addFilter(_Demote())


def use_threads(threads: int) -> None:
    """torch computes with the cores Snakemake reserved for the job (evaluation.threads), not with every core."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


@contextlib.contextmanager
def progress_bars_to_log():
    """lm-eval draws its progress bars on stderr whatever TQDM_DISABLE says: keep them off the terminal.

    What else reaches stderr meanwhile goes to the job's log, progress bars left out.
    """
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            yield
    finally:
        for line in buffer.getvalue().replace("\r", "\n").splitlines():
            if line.strip() and "it/s]" not in line and "%|" not in line:
                log.info("%s", line)


def check_reachable(spec: ModelSpec) -> None:
    """A Hub model: one quick request for its info, so an unreachable Hub or a wrong id fails at once, in one line.

    (transformers would retry for about half a minute first.) Skipped for local folders and with HF_HUB_OFFLINE.
    """
    from huggingface_hub import HfApi, constants

    if spec.is_local or constants.HF_HUB_OFFLINE:
        return
    try:
        HfApi().model_info(spec.path, revision=spec.revision, timeout=30)
    except Exception as error:  # noqa: BLE001 (connection errors, 401, 404 …)
        raise ModelLoadError(f"{spec.describe()} cannot be loaded: {type(error).__name__}: {first_line(error)}") from None


def load_lm(spec: ModelSpec, settings: ForwardSettings):
    """lm-eval's HFLM for the model; any failure to load becomes one line naming the model."""
    from lm_eval.models.huggingface import HFLM

    check_reachable(spec)

    kwargs: dict[str, Any] = {
        "pretrained": spec.path,
        "device": settings.device,
        "dtype": settings.dtype,
        "batch_size": settings.batch_size,
        "trust_remote_code": spec.trust_remote_code,
    }
    if spec.revision and not spec.is_local:
        kwargs["revision"] = spec.revision
    try:
        return HFLM(**kwargs)
    except Exception as error:  # noqa: BLE001 (transformers, huggingface_hub and requests raise many kinds)
        raise ModelLoadError(f"{spec.describe()} cannot be loaded: {first_line(error)}") from None


def model_args_text(spec: ModelSpec, settings: ForwardSettings) -> str:
    """lm-eval's model_args string for the results' config (what ``lm_eval --model_args`` would take)."""
    parts = [f"pretrained={spec.path}", f"dtype={settings.dtype}", f"trust_remote_code={spec.trust_remote_code}"]
    if spec.revision and not spec.is_local:
        parts.insert(1, f"revision={spec.revision}")
    return ",".join(parts)


# --- lm-eval ----------------------------------------------------------------------------------


def build_include_dir(
    include_dir: str | Path, *, generated: Sequence[str | Path] = (), local_data: dict | None = None, tasks: Sequence[str] = ()
) -> list[str]:
    """Fill ``include_dir`` with the generated tasks' YAML, the local-data overrides and the corrected tasks
    (:func:`nanogerman.suites.write_task_definitions`); return the task and group names it defines, generated ones first."""
    include_dir = Path(include_dir)
    include_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for task_dir in generated:
        names.append(generated_task_yaml(task_dir, include_dir).stem)
    return names + write_task_definitions(include_dir, tasks, local_data)


def find_task_yaml(task: str, root: str | Path | None = None) -> Path:
    """The installed lm-eval YAML that defines ``task`` (a quick text search, checked with lm-eval's own loader)."""
    found = find_yaml(task, "task", root)
    if found is None:
        raise EvaluationError(f"config error: evaluation.local_data names {task!r}, which is not an installed lm-eval task")
    return found


def _task_manager(include_path, *, defaults: bool = True):
    """lm-eval's TaskManager; without ``defaults`` it indexes only ``include_path`` (seconds instead of ~15)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(include_path) if include_path else None, include_defaults=defaults)


def run_lm_eval(
    spec: ModelSpec,
    tasks: Sequence[str],
    settings: EvalSettings,
    *,
    include_dir: str | Path | None = None,
    included: Sequence[str] = (),
    lm=None,
) -> dict:
    """lm-eval's results for ``tasks``; the JSON-ready dict, samples left out.

    ``included`` are the tasks that ``include_dir`` defines; when it holds them all, lm-eval's
    built-in tasks are not indexed.
    """
    import lm_eval
    from lm_eval.utils import handle_non_serializable

    task_manager = _task_manager(include_dir, defaults=not set(tasks) <= set(included))
    unknown = [task for task in tasks if task not in task_manager.all_tasks]
    if unknown:
        raise EvaluationError(f"config error: evaluation.tasks has {unknown[0]!r}, which lm-eval does not know")
    lm = lm if lm is not None else load_lm(spec, settings)
    started = time.time()
    try:
        with progress_bars_to_log():
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(tasks),
                num_fewshot=settings.num_fewshot,
                limit=settings.limit,
                task_manager=task_manager,
                log_samples=True,
                random_seed=settings.seed,
                numpy_random_seed=settings.seed,
                torch_random_seed=settings.seed,
                fewshot_random_seed=settings.seed,
                bootstrap_iters=settings.bootstrap_iters,
            )
    except (OSError, ConnectionError) as error:
        raise EvaluationError(f"{spec.describe()}: lm-eval could not load a task's data: {first_line(error)}") from None
    except AssertionError:
        raise EvaluationError(
            f"{spec.describe()}: lm-eval stopped on an internal check, most likely an answer longer than the model's "
            f"context of {getattr(lm, 'max_length', '?')} tokens (lower evaluation.next_passage.continuation_chars)"
        ) from None
    samples = results.pop("samples", None) or {}
    chance = chance_levels(results, samples)
    items = json.loads(json.dumps(item_scores(samples), default=handle_non_serializable))
    results = json.loads(json.dumps(dict(results), default=handle_non_serializable))
    results.setdefault("config", {})["model_args"] = model_args_text(spec, settings)
    results["config"]["model"] = "hf"
    results["nanogerman"] = {
        "model": spec.name,
        "kind": spec.kind,
        "path": spec.path,
        "revision": spec.revision,
        "seconds": round(time.time() - started, 3),
        "versions": package_versions(VERSIONED_PACKAGES),
        "chance": chance,
        "items": items,
    }
    return results


def evaluate_lm_eval(
    spec: ModelSpec,
    settings: EvalSettings,
    out: str | Path,
    *,
    tasks: Sequence[str] = (),
    generated: Sequence[str | Path] = (),
    local_data: dict | None = None,
    clean: dict | None = None,
) -> dict:
    """The job of one model: generated tasks + configured tasks through lm-eval, written to ``out``; with ``clean``
    ({task: contamination result}) each of those tasks also on its clean subset (:mod:`nanogerman.clean_subsets`)."""
    with scratch_dir("tasks") as include_dir:
        names = build_include_dir(include_dir, generated=generated, local_data=local_data, tasks=tasks)
        generated_names = names[: len(generated)]
        all_tasks = [*[name for name in generated_names if name not in tasks], *tasks]
        names += (clean_names := write_clean_tasks(include_dir, clean or {}))
        all_tasks += clean_names
        if not all_tasks:
            raise EvaluationError("config error: no lm-eval tasks: set evaluation.tasks or enable evaluation.next_passage")
        results = run_lm_eval(spec, all_tasks, settings, include_dir=include_dir, included=names)
    write_json(out, results)
    for task in all_tasks:
        scores = results.get("results", {}).get(task, {})
        log.info("%s: %s acc %s acc_norm %s", spec.name, task, scores.get("acc,none"), scores.get("acc_norm,none"))
    return results


# --- bits per byte ------------------------------------------------------------------------------


def rolling_windows(ids: Sequence[int], prefix: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    """(inputs, targets) windows that score every id once: ``prefix`` then each id given up to ``max_length`` before it."""
    if max_length < 1:
        raise ValueError("max_length must be >= 1")
    sequence = [prefix, *ids]
    windows = []
    for start in range(0, len(ids), max_length):
        targets = sequence[start + 1 : start + 1 + max_length]
        windows.append((sequence[start : start + len(targets)], targets))
    return windows


def document_nll(model, ids: Sequence[int], prefix: int, max_length: int, *, device: str, batch_size: int) -> float:
    """Negative log-likelihood (nats) of ``ids`` after ``prefix`` under a causal LM, in rolling windows."""
    import torch

    total = 0.0
    windows = rolling_windows(ids, prefix, max_length)
    by_length: dict[int, list] = {}
    for window in windows:
        by_length.setdefault(len(window[0]), []).append(window)
    for _length, group in sorted(by_length.items()):
        for first in range(0, len(group), batch_size):
            batch = group[first : first + batch_size]
            inputs = torch.tensor([window[0] for window in batch], dtype=torch.long, device=device)
            targets = torch.tensor([window[1] for window in batch], dtype=torch.long, device=device)
            with torch.no_grad():
                logits = model(inputs).logits.float()
            log_probs = torch.log_softmax(logits, dim=-1)
            total -= float(log_probs.gather(-1, targets.unsqueeze(-1)).sum().double())
    return total


def bits_per_byte(model, tokenizer, texts: Iterable[str], *, max_length: int, device: str, batch_size: int) -> dict:
    """Bits per UTF-8 byte of ``texts`` (see the module docstring), with tokens, bytes and the uniform-model figure."""
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if prefix is None:
        raise EvaluationError("the tokenizer has neither a BOS nor an EOS token to start documents with")
    nll = 0.0
    tokens = 0
    size = 0
    documents = 0
    per_document = []
    for text in texts:
        if not text:
            continue
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        document = document_nll(model, ids, prefix, max_length, device=device, batch_size=batch_size)
        nbytes = len(text.encode("utf-8"))
        per_document.append(document / math.log(2) / nbytes)
        nll += document
        tokens += len(ids)
        size += nbytes
        documents += 1
    if not size:
        raise EvaluationError("no held-out text to compute bits per byte on")
    vocab = int(model.config.vocab_size)
    value = nll / math.log(2) / size
    stderr = None
    if documents > 1:
        mean = sum(per_document) / documents
        stderr = math.sqrt(sum((x - mean) ** 2 for x in per_document) / (documents - 1) / documents)
    return {
        "bits_per_byte": value,
        "bits_per_byte_stderr": stderr,  # over documents (their per-document figures)
        "nll_nats": nll,
        "tokens": tokens,
        "bytes": size,
        "documents": documents,
        "tokens_per_byte": tokens / size,
        "vocab_size": vocab,
        "uniform_bits_per_byte": math.log2(vocab) * tokens / size,
        "max_length": max_length,
    }


def model_max_length(model, configured: int | None = None) -> int:
    """The context the model was trained with (``max_position_embeddings``), capped by ``configured``."""
    length = getattr(model.config, "max_position_embeddings", None) or 2048
    return int(min(length, configured) if configured else length)


def evaluate_bits_per_byte(
    spec: ModelSpec,
    settings: ForwardSettings,
    texts: Sequence[str],
    out: str | Path,
    *,
    max_length: int | None = None,
    source: dict | None = None,
    lm=None,
) -> dict:
    """The bits-per-byte job of one model, written in lm-eval's results shape (task :data:`BPB_TASK`)."""
    lm = lm if lm is not None else load_lm(spec, settings)
    started = time.time()
    model = lm.model
    model.eval()
    figures = bits_per_byte(
        model,
        lm.tokenizer,
        texts,
        max_length=model_max_length(model, max_length),
        device=str(model.device),
        batch_size=settings.batch_size,
    )
    entry = {
        "alias": BPB_TASK,
        "bits_per_byte,none": figures["bits_per_byte"],
        "bits_per_byte_stderr,none": figures["bits_per_byte_stderr"] if figures["bits_per_byte_stderr"] is not None else "N/A",
        **{key: value for key, value in figures.items() if not key.startswith("bits_per_byte")},
    }
    results = {
        "results": {BPB_TASK: entry},
        "config": {"model": "hf", "model_args": model_args_text(spec, settings)},
        "nanogerman": {
            "model": spec.name,
            "kind": spec.kind,
            "path": spec.path,
            "revision": spec.revision,
            "source": source or {},
            "seconds": round(time.time() - started, 3),
            "versions": package_versions(VERSIONED_PACKAGES),
        },
    }
    write_json(out, results)
    log.info(
        "%s: %.4f bits per byte over %d bytes (uniform over the vocabulary: %.4f)",
        spec.name,
        figures["bits_per_byte"],
        figures["bytes"],
        figures["uniform_bits_per_byte"],
    )
    return results
