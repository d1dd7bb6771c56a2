"""Dataset stage: the corpus shards as a TFDS dataset for MaxText.

The dataset has one feature, ``text`` (one document per example), and the splits
``train`` and ``validation``. It is written as ``tfrecord`` (MaxText's
``dataset_type=tfds`` pipeline) or ``array_record`` (MaxText's Grain pipeline,
``dataset_type=grain grain_file_type=arrayrecord``).

Two routes write the same examples, both from the definition here
(:func:`features`, :data:`DESCRIPTION`, :func:`builder_class`):

* **Parallel (the workflow).** :func:`write_part` serializes one corpus shard into
  record files with the dataset's own ``FeaturesDict`` serializer and TFDS's own
  file writers; Snakemake runs one such job per shard, on any executor. Then
  :func:`assemble_dataset` hard-links the parts into the TFDS folder layout
  ``<data_dir>/<name>/<version>/<name>-<split>.<format>-XXXXX-of-YYYYY`` and writes
  the metadata with ``tfds.folder_dataset.write_metadata`` from the counts the
  part jobs recorded, so the 240 × 250 M-character real run is never re-read by
  one process.
* **Single process.** ``builder_class(name, version)(data_dir=…, train_files=…,
  validation_files=…).download_and_prepare()``: a plain ``GeneratorBasedBuilder``
  for small builds and as the reference the tests compare the parallel route with.
  Like any TFDS build it orders examples by a hash of their keys (deterministic).

The parallel route keeps the corpus order (shard by shard, row by row): a global
shuffle would need every shard in one job. Rebuilding from the same shards and
config gives identical bytes. MaxText shuffles at read time (file order,
interleaving and a shuffle buffer for tfds; a global index shuffle for Grain). The
dataset is deliberately not marked ``disable_shuffling`` (TFDS would then refuse
MaxText's ``shuffle_files=True``).

TensorFlow and TFDS are imported inside the functions: importing them takes
seconds, and the Snakefile imports this package's config code on every run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nanogerman.atomic import atomic_path, write_json
from nanogerman.errors import StageError, first_line
from nanogerman.manifests import read_json_object
from nanogerman.text_column import parquet_text_batches

log = logging.getLogger(__name__)

TEXT = "text"
FORMATS = ("tfrecord", "array_record")
SPLITS = ("train", "validation")
DEFAULT_NAME = "german_maxtext_nano_data"
DEFAULT_VERSION = "1.0.0"
DESCRIPTION = (
    "German pretraining text for MaxText: one document per example in the feature 'text', "
    "in corpus order (shard by shard, row by row); split 'train' and the held-out split 'validation'."
)
HOMEPAGE = "https://huggingface.co/datasets/stefan-it/nanochat-german-data"
PART_MANIFEST = "part.json"
# TFDS decides that a dataset exists by its metadata: publishing copies these last.
METADATA_FILES = ("features.json", "dataset_info.json")
# Keys for the single-process builder (unique integers): shard position in the high bits, row in the low ones.
_ROW_BITS = 40


class DatasetError(StageError):
    """A corpus shard, a part or a dataset folder is unusable; the message names it."""


# --- the definition of the dataset ------------------------------------------------------


def features():
    """The dataset's features: one ``text`` string per example (stored as UTF-8 bytes)."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict({TEXT: tfds.features.Text()})


def dataset_info_kwargs() -> dict:
    """Metadata shared by both routes (the builder's ``_info`` and ``write_metadata``)."""
    return {"description": DESCRIPTION, "homepage": HOMEPAGE}


@functools.cache
def builder_class(name: str = DEFAULT_NAME, version: str = DEFAULT_VERSION):
    """The ``tfds.core.GeneratorBasedBuilder`` subclass that defines dataset ``name`` at ``version``.

    Created on demand (the name comes from the config) and not registered in TFDS's
    global registry, so several names can coexist in one process; reading a built
    dataset needs no registration either (``tfds.builder(name, data_dir=…)``).
    Construct it with ``train_files`` and ``validation_files`` (parquet paths) and
    call ``download_and_prepare()`` for a single-process build.
    """
    import tensorflow_datasets as tfds

    class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)

        def __init__(self, *, train_files: Sequence[str | Path] = (), validation_files: Sequence[str | Path] = (), **kwargs):
            self._split_files = {"train": list(train_files), "validation": list(validation_files)}
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=features(), **dataset_info_kwargs())

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(paths) for split, paths in self._split_files.items() if paths}

        def _generate_examples(self, paths):
            for position, path in enumerate(paths):
                for row, text in enumerate(iter_texts(path)):
                    yield (position << _ROW_BITS) | row, {TEXT: text}

    Builder.name = name
    Builder.__name__ = Builder.__qualname__ = f"Builder_{name}"
    return Builder


def build_single_process(
    train_files: Sequence[str | Path],
    validation_files: Sequence[str | Path],
    data_dir: str | Path,
    *,
    name: str = DEFAULT_NAME,
    version: str = DEFAULT_VERSION,
    file_format: str = "tfrecord",
) -> Path:
    """Build the dataset in this process with the ``GeneratorBasedBuilder``; returns its folder."""
    check_format(file_format)
    builder = builder_class(name, version)(
        data_dir=str(data_dir), file_format=file_format, train_files=train_files, validation_files=validation_files
    )
    builder.download_and_prepare()
    return Path(data_dir) / name / version


def check_format(file_format: str) -> None:
    if file_format not in FORMATS:
        raise DatasetError(f"dataset.format is {file_format!r}; expected one of {', '.join(map(repr, FORMATS))}")


# --- reading corpus shards ---------------------------------------------------------------


def iter_texts(parquet_path: str | Path, batch_size: int = 1024) -> Iterator[str]:
    """The ``text`` column of a corpus shard, row by row, one record batch in memory at a time."""
    path = Path(parquet_path)
    for texts in parquet_text_batches(path, column=TEXT, batch_size=batch_size, error=DatasetError):
        if texts.null_count:
            raise DatasetError(
                f"{path}: column '{TEXT}' has {texts.null_count} null values; the corpus stage should have refused it"
            )
        yield from texts.to_pylist()


def row_count(parquet_path: str | Path) -> int:
    try:
        return pq.ParquetFile(parquet_path).metadata.num_rows
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"{parquet_path}: not a readable parquet file ({first_line(error)})") from None


# --- the parallel route: one part per corpus shard ---------------------------------------


def part_file_name(index: int, count: int, file_format: str) -> str:
    return f"part-{index:05d}-of-{count:05d}.{file_format}"


def chunk_bounds(rows: int, files: int) -> list[int]:
    """Row offsets that cut ``rows`` rows into ``files`` contiguous, near-equal chunks."""
    return [rows * k // files for k in range(files + 1)]


def write_part(parquet_path: str | Path, part_dir: str | Path, *, file_format: str, files_per_shard: int) -> dict:
    """Serialize one corpus shard into ``files_per_shard`` record files in ``part_dir``.

    Uses the dataset's ``FeaturesDict`` serializer and TFDS's own writer for the
    format, so the files are exactly what a TFDS build writes. Rows are split into
    contiguous chunks in order (fewer files if the shard has fewer rows than
    ``files_per_shard``). ``part_dir`` appears only when complete; it holds the
    files and ``part.json`` (examples, serialized bytes, size, sha256 and md5 per
    file) for :func:`assemble_dataset`. Returns that manifest.
    """
    from tensorflow_datasets.core import file_adapters

    check_format(file_format)
    started = time.perf_counter()
    parquet_path = Path(parquet_path)
    rows = row_count(parquet_path)
    if rows == 0:
        raise DatasetError(f"{parquet_path}: the shard has no rows")
    count = max(1, min(int(files_per_shard), rows))
    bounds = chunk_bounds(rows, count)
    serializer = features()
    adapter = file_adapters.ADAPTER_FOR_FORMAT[file_adapters.FileFormat(file_format)]
    texts = iter_texts(parquet_path)
    entries = []
    with atomic_path(part_dir, directory=True) as temporary:
        for index in range(count):
            name = part_file_name(index, count, file_format)
            tally = {"examples": 0, "num_bytes": 0, "characters": 0}

            def serialized(wanted: int = bounds[index + 1] - bounds[index], tally: dict = tally) -> Iterator[tuple[None, bytes]]:
                for _ in range(wanted):
                    text = next(texts, None)
                    if text is None:
                        raise DatasetError(
                            f"{parquet_path}: fewer rows than its metadata says ({rows}); the file changed while being read?"
                        )
                    record = serializer.serialize_example({TEXT: text})
                    tally["examples"] += 1
                    tally["num_bytes"] += len(record)
                    tally["characters"] += len(text)
                    yield None, record

            adapter.write_examples(os.fspath(temporary / name), serialized())
            entries.append({"file": name, **tally, **file_checksums(temporary / name)})
        if next(texts, None) is not None:
            raise DatasetError(f"{parquet_path}: more rows than its metadata says ({rows}); the file changed while being read?")
        manifest = {
            "shard": parquet_path.stem,
            "source": str(parquet_path),
            "format": file_format,
            "rows": rows,
            "characters": sum(entry["characters"] for entry in entries),
            "files": entries,
        }
        write_json(temporary / PART_MANIFEST, manifest)
    seconds = time.perf_counter() - started
    log.info(
        "%s: %d examples into %d %s file(s), %.1f MB, in %.2f s",
        parquet_path.stem,
        rows,
        count,
        file_format,
        sum(entry["bytes"] for entry in entries) / 1e6,
        seconds,
    )
    return manifest


def file_checksums(path: str | Path, chunk_bytes: int = 1 << 20) -> dict:
    """Size, sha256 (hex) and md5 (base64, as GCS reports it) of a file, in one pass."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": sha256.hexdigest(), "md5": base64.b64encode(md5.digest()).decode("ascii")}


def read_part_manifest(part_dir: str | Path, file_format: str) -> dict:
    path = Path(part_dir) / PART_MANIFEST
    manifest = read_json_object(path, "dataset part manifest", error=DatasetError)
    if manifest.get("format") != file_format:
        raise DatasetError(
            f"{path}: part was written as {manifest.get('format')!r}, but dataset.format is {file_format!r}; rebuild the part"
        )
    return manifest


def assemble_dataset(
    parts: Mapping[str, Sequence[str | Path]],
    data_dir: str | Path,
    manifest_path: str | Path,
    *,
    name: str = DEFAULT_NAME,
    version: str = DEFAULT_VERSION,
    file_format: str = "tfrecord",
) -> dict:
    """Put the parts of each split into one TFDS dataset folder and write its metadata.

    ``parts`` maps a split name to its part folders, in order. Files are hard-linked
    (copied across file systems) into ``<data_dir>/<name>/<version>/`` under TFDS's
    names, numbered across the split; the metadata (``dataset_info.json``,
    ``features.json``) comes from ``tfds.folder_dataset.write_metadata`` with the
    split statistics the part jobs recorded. The folder appears only when complete.
    Writes and returns the build manifest (the contract of the training stage; see
    :func:`manifest_for`).
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import naming

    check_format(file_format)
    started = time.perf_counter()
    seen: dict[str, str] = {}
    for split, folders in parts.items():
        if not folders:
            raise DatasetError(f"split {split!r} has no corpus shards; check dataset.{split}_shards")
        for folder in folders:
            if str(folder) in seen:
                raise DatasetError(f"{folder} is in both split {seen[str(folder)]!r} and {split!r}; splits must not share shards")
            seen[str(folder)] = split
    data_dir = Path(data_dir)
    dataset_dir = data_dir / name / version
    splits: dict[str, dict] = {}
    files_info: dict[str, dict] = {}
    with atomic_path(dataset_dir, directory=True) as temporary:
        split_infos = []
        for split, folders in parts.items():
            manifests = [read_part_manifest(folder, file_format) for folder in folders]
            entries = [
                (Path(folder), entry) for folder, manifest in zip(folders, manifests, strict=False) for entry in manifest["files"]
            ]
            template = naming.ShardedFileTemplate(data_dir=temporary, dataset_name=name, split=split, filetype_suffix=file_format)
            names = []
            for index, (folder, entry) in enumerate(entries):
                target = template.sharded_filepath(shard_index=index, num_shards=len(entries))
                _link_or_copy(folder / entry["file"], Path(target))
                relative = f"{name}/{version}/{Path(target).name}"
                names.append(relative)
                files_info[relative] = {key: entry[key] for key in ("bytes", "sha256", "md5")}
            split_infos.append(
                tfds.core.SplitInfo(
                    name=split,
                    shard_lengths=[entry["examples"] for _, entry in entries],
                    num_bytes=sum(entry["num_bytes"] for _, entry in entries),
                    filename_template=template,
                )
            )
            splits[split] = {
                "examples": sum(entry["examples"] for _, entry in entries),
                "characters": sum(manifest["characters"] for manifest in manifests),
                "shards": [manifest["shard"] for manifest in manifests],
                "files": names,
            }
        tfds.folder_dataset.write_metadata(
            data_dir=temporary,
            features=features(),
            split_infos=split_infos,
            version=version,
            check_data=False,  # checked below from the finished folder, without reading every file
            **dataset_info_kwargs(),
        )
        for metadata in METADATA_FILES:
            files_info[f"{name}/{version}/{metadata}"] = file_checksums(temporary / metadata)
    check_dataset_folder(dataset_dir, {split: info["examples"] for split, info in splits.items()})
    build = manifest_for(
        name=name, version=version, file_format=file_format, data_dir=str(data_dir.resolve()), splits=splits, files=files_info
    )
    write_json(manifest_path, build)
    log.info(
        "%s:%s: %s in %.2f s",
        name,
        version,
        ", ".join(f"{split} {info['examples']} examples in {len(info['files'])} files" for split, info in splits.items()),
        time.perf_counter() - started,
    )
    return build


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def check_dataset_folder(dataset_dir: str | Path, examples: Mapping[str, int]) -> None:
    """Load the folder's metadata the way readers do and compare the example counts."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder_from_directory(os.fspath(dataset_dir))
    except Exception as error:  # TFDS raises many types here; any of them means an unusable folder
        raise DatasetError(f"{dataset_dir}: TFDS cannot read the metadata ({first_line(error)})") from None
    for split, count in examples.items():
        found = builder.info.splits[split].num_examples
        if found != count:
            raise DatasetError(f"{dataset_dir}: split {split!r} has {found} examples in its metadata, expected {count}")


def manifest_for(
    *,
    name: str,
    version: str,
    file_format: str,
    data_dir: str,
    splits: Mapping[str, dict],
    files: Mapping[str, dict],
    local_data_dir: str | None = None,
    published: dict | None = None,
) -> dict:
    """The dataset manifest: what the training stage reads (``results/dataset/dataset.json``).

    ``data_dir`` is where readers find ``<name>/<version>/`` (a local folder or a
    ``gs://`` URI); file names in ``splits`` and ``checksums`` are relative to it.
    ``maxtext`` holds the matching MaxText options.
    """
    root = data_dir.rstrip("/")
    patterns = {split: f"{root}/{name}/{version}/{name}-{split}.{file_format}-*" for split in splits}
    if file_format == "tfrecord":
        maxtext = {
            "dataset_type": "tfds",
            "dataset_path": root,
            "dataset_name": f"{name}:{version}",
            "train_split": "train",
            "eval_dataset_name": f"{name}:{version}",
            "eval_split": "validation",
        }
    else:
        maxtext = {
            "dataset_type": "grain",
            "grain_file_type": "arrayrecord",
            "grain_train_files": patterns.get("train"),
            "grain_eval_files": patterns.get("validation"),
            "use_truncation": False,  # documents longer than the context are cut into pieces, not truncated
        }
    return {
        "name": name,
        "version": version,
        "format": file_format,
        "data_dir": root,
        "local_data_dir": local_data_dir or root,
        "splits": {split: dict(info) for split, info in splits.items()},
        "train_file_pattern": patterns.get("train"),
        "validation_file_pattern": patterns.get("validation"),
        "checksums": {path: info["sha256"] for path, info in sorted(files.items())},
        "files": {path: dict(info) for path, info in sorted(files.items())},
        "maxtext": maxtext,
        "published": published,
    }


# --- reading a built dataset (tests, benchmark, checks) -----------------------------------


def read_texts(dataset_dir: str | Path, split: str) -> list[str]:
    """Every ``text`` of ``split`` in stored order, read through TFDS (tfrecord) or its data source (array_record)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(os.fspath(dataset_dir))
    if builder.info.file_format.value == "array_record":
        source = builder.as_data_source(split=split)
        return [record[TEXT].decode("utf-8") for record in (source[index] for index in range(len(source)))]
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    return [record[TEXT].decode("utf-8") for record in tfds.as_numpy(dataset)]


def parquet_texts(paths: Iterable[str | Path]) -> list[str]:
    """The rows of corpus shards in order, to compare a built dataset with."""
    return [text for path in paths for text in iter_texts(path)]
