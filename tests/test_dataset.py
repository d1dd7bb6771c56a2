"""Dataset stage: corpus shards as a TFDS dataset (tfrecord and array_record), built per shard, published to GCS."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nanogerman.config import ConfigError, validate_config
from nanogerman.dataset import (
    DatasetError,
    assemble_dataset,
    build_single_process,
    chunk_bounds,
    parquet_texts,
    read_texts,
    write_part,
)
from nanogerman.dataset_publish import finish_dataset, publish_dataset

NAME, VERSION = "german_test_data", "1.0.0"
TRAIN_SHARDS = ["shard_00000", "shard_00001"]
VALIDATION_SHARDS = ["shard_00004"]


def build(sample_dir: Path, root: Path, *, file_format: str = "tfrecord", files_per_shard: int = 1) -> dict:
    """The workflow's route: one part per shard, then the assembly."""
    parts = {}
    for split, shards in (("train", TRAIN_SHARDS), ("validation", VALIDATION_SHARDS)):
        parts[split] = []
        for shard in shards:
            part = root / "parts" / shard
            write_part(sample_dir / f"{shard}.parquet", part, file_format=file_format, files_per_shard=files_per_shard)
            parts[split].append(part)
    return assemble_dataset(parts, root / "tfds", root / "build.json", name=NAME, version=VERSION, file_format=file_format)


def shard_files(sample_dir: Path, shards: list[str]) -> list[Path]:
    return [sample_dir / f"{shard}.parquet" for shard in shards]


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_dir):
    root = tmp_path_factory.mktemp("dataset")
    return root, build(sample_dir, root, files_per_shard=2)


def test_texts_read_back_equal_the_parquet_rows_in_order(built, sample_dir):
    root, manifest = built
    folder = root / "tfds" / NAME / VERSION
    for split, shards in (("train", TRAIN_SHARDS), ("validation", VALIDATION_SHARDS)):
        expected = parquet_texts(shard_files(sample_dir, shards))
        assert read_texts(folder, split) == expected
        assert manifest["splits"][split]["examples"] == len(expected)
        assert manifest["splits"][split]["characters"] == sum(map(len, expected))
        assert manifest["splits"][split]["shards"] == shards
    # two files per shard, numbered across the split
    assert len(manifest["splits"]["train"]["files"]) == 4
    assert manifest["splits"]["train"]["files"][0].endswith(f"{NAME}-train.tfrecord-00000-of-00004")


def test_splits_are_disjoint(built):
    root, _ = built
    folder = root / "tfds" / NAME / VERSION
    assert not set(read_texts(folder, "train")) & set(read_texts(folder, "validation"))


def test_tfds_reads_it_by_name_without_registration_and_batches(built):
    import tensorflow_datasets as tfds

    root, manifest = built
    dataset = tfds.load(NAME, split="train", data_dir=str(root / "tfds"), download=False, shuffle_files=True)
    batch = next(iter(tfds.as_numpy(dataset.batch(8))))
    assert batch["text"].shape == (8,)
    assert all(isinstance(text, bytes) and text for text in batch["text"])
    assert manifest["maxtext"] == {
        "dataset_type": "tfds",
        "dataset_path": str((root / "tfds").resolve()),
        "dataset_name": f"{NAME}:{VERSION}",
        "train_split": "train",
        "eval_dataset_name": f"{NAME}:{VERSION}",
        "eval_split": "validation",
    }


def test_rebuild_gives_identical_bytes(built, sample_dir, tmp_path):
    _, first = built
    second = build(sample_dir, tmp_path, files_per_shard=2)
    assert second["checksums"] == first["checksums"]
    assert len(first["checksums"]) == 4 + 2 + 2  # train files, validation files, features.json, dataset_info.json


def test_single_process_builder_writes_the_same_examples(built, sample_dir, tmp_path):
    root, _ = built
    folder = build_single_process(
        shard_files(sample_dir, TRAIN_SHARDS), shard_files(sample_dir, VALIDATION_SHARDS), tmp_path, name=NAME, version=VERSION
    )
    parallel = root / "tfds" / NAME / VERSION
    for split in ("train", "validation"):
        assert sorted(read_texts(folder, split)) == sorted(read_texts(parallel, split))


def test_array_record_for_grain(sample_dir, tmp_path):
    manifest = build(sample_dir, tmp_path, file_format="array_record")
    folder = tmp_path / "tfds" / NAME / VERSION
    assert read_texts(folder, "validation") == parquet_texts(shard_files(sample_dir, VALIDATION_SHARDS))
    assert manifest["maxtext"]["dataset_type"] == "grain"
    assert manifest["maxtext"]["grain_file_type"] == "arrayrecord"
    assert manifest["maxtext"]["use_truncation"] is False  # Grain cuts long documents into pieces instead of truncating them
    train_files = sorted(Path(folder).glob(f"{NAME}-train.array_record-*"))
    assert [str(path) for path in train_files] == sorted(
        str(path) for path in Path(folder).parent.parent.glob(manifest["train_file_pattern"].split("/tfds/", 1)[1])
    )
    # Grain, as MaxText uses it, reads the records directly
    import grain.python as grain
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    source = ArrayRecordDataSource([str(path) for path in train_files])
    assert len(source) == manifest["splits"]["train"]["examples"]
    assert isinstance(grain.MapDataset.source(source)[0], bytes)


def test_chunk_bounds_cover_every_row_once():
    assert chunk_bounds(10, 3) == [0, 3, 6, 10]
    assert chunk_bounds(2, 2) == [0, 1, 2]


# --- bad input -------------------------------------------------------------------------------


def _write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _write(p, pa.table({"body": ["Hallo"]})), "no 'text' column (columns: body)"),
        (lambda p: _write(p, pa.table({"text": pa.array([], pa.string())})), "the shard has no rows"),
        (lambda p: p.write_bytes(b"PAR1 not really"), "not a readable parquet file"),
    ],
    ids=["wrong column", "empty", "not parquet"],
)
def test_bad_shard_gives_one_line_and_no_part(tmp_path, make, message):
    shard = tmp_path / "shard_00000.parquet"
    make(shard)
    part = tmp_path / "parts" / "shard_00000"
    with pytest.raises(DatasetError) as caught:
        write_part(shard, part, file_format="tfrecord", files_per_shard=1)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not part.exists()
    assert list((tmp_path / "parts").iterdir()) == [] if (tmp_path / "parts").exists() else True


def test_assembly_refuses_an_incomplete_part_and_leaves_no_folder(tmp_path, sample_dir):
    good = tmp_path / "parts" / "shard_00000"
    write_part(sample_dir / "shard_00000.parquet", good, file_format="tfrecord", files_per_shard=1)
    broken = tmp_path / "parts" / "shard_00004"
    broken.mkdir()
    with pytest.raises(
        DatasetError, match=r"part.json: unreadable dataset part manifest \(missing or not valid JSON: no such file\)"
    ):
        assemble_dataset({"train": [good], "validation": [broken]}, tmp_path / "tfds", tmp_path / "build.json", name=NAME)
    assert not (tmp_path / "tfds" / NAME).exists() or not any((tmp_path / "tfds" / NAME).iterdir())
    assert not (tmp_path / "build.json").exists()


def test_assembly_refuses_a_part_in_two_splits(tmp_path, sample_dir):
    part = tmp_path / "parts" / "shard_00000"
    write_part(sample_dir / "shard_00000.parquet", part, file_format="tfrecord", files_per_shard=1)
    with pytest.raises(DatasetError, match="in both split"):
        assemble_dataset({"train": [part], "validation": [part]}, tmp_path / "tfds", tmp_path / "build.json")


def test_config_refuses_overlapping_splits(base_config):
    base_config["corpus"]["shard_sets"]["validation"] = "3-4"
    with pytest.raises(ConfigError) as caught:
        validate_config(base_config)
    assert str(caught.value) == (
        "config error: dataset.train_shards ('train') and dataset.validation_shards ('validation') share shard(s) 3; "
        "the train and validation splits must be disjoint"
    )


def test_config_refuses_unknown_shard_set(base_config):
    base_config["dataset"] = {"train_shards": "pretrain"}
    with pytest.raises(ConfigError, match=r"dataset.train_shards is 'pretrain'; expected the name of a shard set"):
        validate_config(base_config)


# --- publishing to gs:// (gcp-storage-emulator on loopback) ----------------------------------


@pytest.fixture
def bucket(gcs_emulator):
    from nanogerman.gcs import gcs_filesystem

    filesystem = gcs_filesystem()
    name = f"publish-{len(filesystem.ls(''))}-test"
    filesystem.mkdir(name)
    return filesystem, name


@pytest.mark.network
def test_publish_copies_the_whole_dataset_and_records_it(built, bucket, tmp_path):
    filesystem, name = bucket
    root, _ = built
    manifest = finish_dataset(root / "build.json", tmp_path / "dataset.json", f"gs://{name}/tfds")
    assert json.loads((tmp_path / "dataset.json").read_text()) == manifest
    assert manifest["data_dir"] == f"gs://{name}/tfds"
    assert manifest["maxtext"]["dataset_path"] == f"gs://{name}/tfds"
    assert manifest["published"]["uri"] == f"gs://{name}/tfds/{NAME}/{VERSION}"
    remote = sorted(path.split("/", 2)[2] for path in filesystem.find(f"{name}/tfds"))
    assert remote == sorted(manifest["checksums"])
    for relative, info in manifest["files"].items():
        assert filesystem.cat_file(f"{name}/tfds/{relative}") == (root / "tfds" / relative).read_bytes()
        assert int(filesystem.info(f"{name}/tfds/{relative}")["size"]) == info["bytes"]
    # publishing again is a no-op; a different dataset under the same version is refused
    assert publish_dataset(json.loads((root / "build.json").read_text()), f"gs://{name}/tfds") == manifest
    changed = json.loads((root / "build.json").read_text())
    first = next(path for path in changed["files"] if "train" in path)
    changed["files"][first] = dict(changed["files"][first], bytes=1)
    with pytest.raises(DatasetError, match="already holds a different dataset; TFDS versions are immutable"):
        publish_dataset(changed, f"gs://{name}/tfds")


class FailingCopies:
    """A gcsfs file system whose server-side copy fails after ``allowed`` copies: a failure midway through step 2."""

    def __init__(self, filesystem, allowed: int):
        self._filesystem, self._allowed = filesystem, allowed

    def copy(self, source, target, **kwargs):
        if self._allowed == 0:
            raise OSError("503 Service Unavailable (injected)")
        self._allowed -= 1
        return self._filesystem.copy(source, target, **kwargs)

    def __getattr__(self, name):
        return getattr(self._filesystem, name)


@pytest.mark.network
@pytest.mark.parametrize("allowed", [0, 3, 6], ids=["first copy", "midway", "last copy"])
def test_publish_failure_midway_leaves_nothing_under_the_final_uri(built, bucket, allowed):
    filesystem, name = bucket
    root, _ = built
    build_manifest = json.loads((root / "build.json").read_text())
    with pytest.raises(DatasetError) as caught:
        publish_dataset(build_manifest, f"gs://{name}/tfds", filesystem=FailingCopies(filesystem, allowed))
    assert "failed and was rolled back (503 Service Unavailable (injected))" in str(caught.value)
    assert filesystem.find(f"{name}/tfds") == []  # neither data files nor metadata nor the staging prefix
    # and the next attempt publishes it whole
    manifest = publish_dataset(build_manifest, f"gs://{name}/tfds", filesystem=filesystem)
    assert len(filesystem.find(f"{name}/tfds/{NAME}/{VERSION}")) == len(manifest["checksums"])


@pytest.mark.network
def test_publish_to_a_missing_bucket_is_one_line(built, gcs_emulator):
    root, _ = built
    with pytest.raises(DatasetError) as caught:
        publish_dataset(json.loads((root / "build.json").read_text()), "gs://no-such-bucket-here/tfds")
    assert str(caught.value) == (
        "gs://no-such-bucket-here: the bucket does not exist or is not readable "
        "(dataset.publish_to is 'gs://no-such-bucket-here/tfds')"
    )


@pytest.mark.slow
def test_workflow_builds_the_dataset(tmp_path, base_config, snakemake_run, sample_dir):
    result = snakemake_run(tmp_path, base_config, "dataset_publish")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "results" / "dataset" / "dataset.json").read_text())
    folder = Path(manifest["local_data_dir"]) / NAME.replace("test", "maxtext_nano") / "1.0.0"
    assert read_texts(folder, "validation") == parquet_texts([sample_dir / "shard_00004.parquet"])
    assert manifest["splits"]["train"]["shards"] == [f"shard_0000{index}" for index in range(4)]
