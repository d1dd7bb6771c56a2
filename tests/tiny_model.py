"""One tiny trained MaxText model and its Hugging Face export, built once per test session.

Shared by tests/test_export.py and tests/test_evaluation.py (both import :func:`tiny_model`;
the first caller builds it, later ones reuse it, also on another pytest-xdist worker: the
build is guarded by a file lock in the folder all workers share, and recorded in a JSON file).
Tests only read it; a test that changes an export copies it first. The run goes through the training
stage's own :func:`nanogerman.training.train_run`, so its ``train.json`` is the real
contract; the data comes from MaxText's Hugging Face parquet pipeline over the sample's
training shards (no TFDS build), the model is nano-german-tiny shrunk to 64 wide.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "german_sample"
RUN = "tiny"
TOKENIZER = "tiny_tok"
VOCAB = 512
STEPS = 30  # about one pass over the 63 training documents (cut to 128 tokens); checkpoints at steps 0 and 29


@dataclass
class TinyModel:
    root: Path
    tokenizer_dir: Path
    manifest_path: Path
    manifest: dict
    export_dir: Path
    export_report: dict
    maxtext_logits: Path  # MaxText's logits for the check's token ids (export_report["logits_check"]["token_ids"])
    seconds: dict


_BUILT: dict[Path, TinyModel] = {}


def tiny_run(steps: int, checkpoint_period: int, **settings) -> dict:
    """``training.defaults`` of a tiny MaxText run: nano-german-tiny shrunk to 64 wide, float32, Grain in MaxText's
    process (a worker process would re-import JAX and MaxText on every start); ``settings`` add or override."""
    return {
        "model": "config/models/nano-german-tiny.yml",
        "learning_rate": 3.0e-3,
        "steps": steps,
        "checkpoint_period": checkpoint_period,
        "epochs": 100,
        "dtype": "float32",
        "extra": {"base_emb_dim": 64, "base_mlp_dim": 128, "head_dim": 16, "grain_worker_count": 0},
        **settings,
    }


def training_config(root: Path) -> dict:
    return {
        "results_dir": str(root / "results"),
        "tokenizers": [{"name": TOKENIZER, "kind": "nanochat", "vocab_size": VOCAB, "shards": "train"}],
        "training": {
            "backend": "local",
            "local": {"hardware": "cpu", "devices": 1},
            "defaults": tiny_run(STEPS, STEPS, per_device_batch_size=2, max_target_length=128, packing=True, seed=0),
            "runs": [{"name": RUN, "tokenizer": TOKENIZER}],
        },
    }


def tiny_model(base: Path) -> TinyModel:
    """Tokenizer → 30 MaxText steps → export of the final checkpoint, under ``base`` (built once per session).

    ``base`` is the session's base temporary folder; under pytest-xdist the workers' parent
    folder is used instead, so two workers build it once between them.
    """
    from filelock import FileLock

    base = Path(base)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # /tmp/pytest-of-<user>/pytest-<n>/, shared by this session's workers
    if base in _BUILT:
        return _BUILT[base]
    record = base / "tiny_model" / "tiny_model.json"
    with FileLock(str(base / "tiny_model.lock")):
        if record.is_file():
            fields = json.loads(record.read_text())
            for name in ("root", "tokenizer_dir", "manifest_path", "export_dir", "maxtext_logits"):
                fields[name] = Path(fields[name])
            _BUILT[base] = TinyModel(**fields)
        else:
            _BUILT[base] = _build(base)
            record.write_text(json.dumps(asdict(_BUILT[base]), default=str))
    return _BUILT[base]


def _build(base: Path) -> TinyModel:
    from nanogerman.export import export_run
    from nanogerman.tokenizer_training import TokenizerSpec, train_tokenizer
    from nanogerman.training import plan_run, train_run

    root = base / "tiny_model"
    results = root / "results"
    seconds = {}
    started = time.monotonic()
    tokenizer_dir = results / "tokenizers" / TOKENIZER
    train_shards = [SAMPLE / f"shard_0000{index}.parquet" for index in range(4)]
    train_tokenizer(TokenizerSpec.from_schema(name=TOKENIZER, kind="nanochat", vocab_size=VOCAB), train_shards, tokenizer_dir)
    dataset_manifest = results / "dataset" / "dataset.json"
    dataset_manifest.parent.mkdir(parents=True, exist_ok=True)
    dataset_manifest.write_text(
        json.dumps(
            {
                "name": "german_sample_parquet",
                "maxtext": {
                    "dataset_type": "hf",
                    "hf_path": "parquet",
                    "hf_train_files": str(SAMPLE / "shard_0000[0-3].parquet"),
                },
            }
        )
    )
    config = training_config(root)
    manifest_path = results / "train" / RUN / "train.json"
    seconds["tokenizer"] = time.monotonic() - started
    started = time.monotonic()
    manifest = train_run(
        plan_run(config, RUN),
        dataset_manifest=dataset_manifest,
        tokenizer_dir=tokenizer_dir,
        checkpoint_dir=config["training"].get("checkpoint_dir"),
        results_dir=results,
        manifest_out=manifest_path,
        metrics_out=manifest_path.with_name("metrics.jsonl"),
    )
    seconds["train"] = time.monotonic() - started
    started = time.monotonic()
    export_dir = results / "hf" / RUN
    maxtext_logits = root / "maxtext_logits.npy"
    report = export_run(manifest_path, tokenizer_dir, export_dir, logits_out=maxtext_logits)
    seconds["export"] = time.monotonic() - started
    return TinyModel(root, tokenizer_dir, manifest_path, manifest, export_dir, report, maxtext_logits, seconds)
