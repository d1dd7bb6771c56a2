"""Publishing a built TFDS dataset folder to ``gs://`` so that no reader ever sees half of it.

GCS has no atomic rename of a prefix, so publishing goes in three steps:

1. Upload every file to a private staging prefix ``<uri>/.staging/<name>-<version>-<token>/``
   and check each object's size and MD5 against the local file. This is the long
   part (hours for the real run); nothing under the final URI changes meanwhile.
2. Copy the staged objects to ``<uri>/<name>/<version>/`` server side (a GCS rewrite,
   seconds): data files first, then ``features.json``, and ``dataset_info.json`` last.
   TFDS (``tfds.builder(name, data_dir=uri)``) only sees a dataset once
   ``dataset_info.json`` is there, so a reader never sees a dataset with files missing.
   Each copy is checked again.
3. Delete the staging prefix.

If anything fails in step 2, every object already copied under the final prefix
is deleted again (metadata first), and so is the staging prefix: the final URI is
left as it was. A process killed outright cannot roll back; it leaves data files
but never ``dataset_info.json`` under the final prefix, and the next publish
removes such leftovers before copying. A *complete* dataset already at the final
URI is kept when its files match (publishing again is a no-op) and refused when
they differ: a TFDS version is immutable, so bump ``dataset.version`` instead.

The local manifest (``results/dataset/dataset.json``) is written by the caller only
after this returns, so the training stage never points at an unfinished upload.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from nanogerman.atomic import write_json
from nanogerman.dataset import METADATA_FILES, DatasetError, manifest_for
from nanogerman.errors import first_line
from nanogerman.gcs import gcs_filesystem, is_gcs_uri, split_gcs_uri
from nanogerman.manifests import read_dataset_manifest

log = logging.getLogger(__name__)

STAGING = ".staging"


def publish_dataset(build: dict, uri: str, *, filesystem: Any = None, token: str | None = None) -> dict:
    """Publish the dataset described by the build manifest ``build`` under ``uri`` (``gs://bucket/prefix``).

    Returns the manifest for the training stage: ``data_dir`` is ``uri``, the file
    patterns point into it, ``local_data_dir`` still names the local copy and
    ``published`` records the final and staging URIs.
    """
    if not is_gcs_uri(uri):
        raise DatasetError(f"dataset.publish_to is {uri!r}; expected a URI like gs://bucket/prefix")
    started = time.perf_counter()
    uri = uri.rstrip("/")
    bucket, _ = split_gcs_uri(uri)
    filesystem = filesystem or gcs_filesystem()
    name, version = build["name"], build["version"]
    local_root = Path(build["local_data_dir"])
    files = build["files"]  # relative path -> {"bytes", "sha256", "md5"}
    ordered = _publish_order(files)
    final_prefix = f"{uri}/{name}/{version}"
    staging_prefix = f"{uri}/{STAGING}/{name}-{version}-{token or uuid.uuid4().hex[:12]}"

    try:
        if not filesystem.exists(bucket):
            raise DatasetError(f"gs://{bucket}: the bucket does not exist or is not readable (dataset.publish_to is {uri!r})")
        if _already_published(filesystem, uri, final_prefix, files):
            log.info("%s already holds this dataset (sizes and MD5 match); nothing to upload", final_prefix)
            return _published_manifest(build, uri, final_prefix)

        # 1. upload to staging and verify
        for relative in ordered:
            local = local_root / relative
            if not local.is_file():
                raise DatasetError(f"{local}: missing from the local dataset folder; rerun the dataset_assemble job")
            filesystem.put_file(str(local), _staged(staging_prefix, relative, name, version))
        for relative in ordered:
            _verify(filesystem, _staged(staging_prefix, relative, name, version), files[relative])
        log.info("uploaded and verified %d files in %s", len(ordered), staging_prefix)

        # 2. make it visible: data files, then the metadata (dataset_info.json last)
        _remove_leftovers(filesystem, final_prefix)
        copied: list[str] = []
        try:
            for relative in ordered:
                target = f"{uri}/{relative}"
                copied.append(target)
                filesystem.copy(_staged(staging_prefix, relative, name, version), target)
                _verify(filesystem, target, files[relative])
        except BaseException:
            _roll_back(filesystem, copied)
            raise
    except DatasetError:
        _delete_quietly(filesystem, staging_prefix)
        raise
    except (OSError, ValueError) as error:
        _delete_quietly(filesystem, staging_prefix)
        raise DatasetError(f"publishing to {final_prefix} failed and was rolled back ({first_line(error)})") from None
    except BaseException:
        _delete_quietly(filesystem, staging_prefix)
        raise

    # 3. clean up
    _delete_quietly(filesystem, staging_prefix)
    log.info("published %s:%s to %s in %.1f s", name, version, final_prefix, time.perf_counter() - started)
    return _published_manifest(build, uri, final_prefix)


def _publish_order(files: dict) -> list[str]:
    """Data files in name order, then the metadata files with ``dataset_info.json`` last."""

    def rank(relative: str) -> tuple[int, str]:
        base = relative.rsplit("/", 1)[-1]
        return (1 + METADATA_FILES.index(base), relative) if base in METADATA_FILES else (0, relative)

    return sorted(files, key=rank)


def _staged(staging_prefix: str, relative: str, name: str, version: str) -> str:
    return f"{staging_prefix}/{relative.removeprefix(f'{name}/{version}/')}"


def _verify(filesystem: Any, remote: str, expected: dict) -> None:
    """Compare an object's size and MD5 with the local file's."""
    info = filesystem.info(remote)
    if int(info.get("size", -1)) != expected["bytes"]:
        raise DatasetError(f"{remote}: {info.get('size')} bytes on GCS, {expected['bytes']} locally; the upload is corrupt")
    md5 = info.get("md5Hash")
    if md5 is not None and md5 != expected["md5"]:
        raise DatasetError(f"{remote}: MD5 {md5} on GCS differs from the local {expected['md5']}; the upload is corrupt")


def _already_published(filesystem: Any, uri: str, final_prefix: str, files: dict) -> bool:
    """True if a complete, identical dataset is at the final prefix; an error if a different one is."""
    info_object = f"{final_prefix}/dataset_info.json"
    if not filesystem.exists(info_object):
        return False
    try:
        for relative, expected in files.items():
            _verify(filesystem, f"{uri}/{relative}", expected)
    except (DatasetError, FileNotFoundError):
        raise DatasetError(
            f"{final_prefix} already holds a different dataset; TFDS versions are immutable, "
            f"so bump dataset.version (or delete {final_prefix} yourself)"
        ) from None
    return True


def _remove_leftovers(filesystem: Any, final_prefix: str) -> None:
    """Delete objects a killed publish left under the final prefix (never a complete dataset: checked before)."""
    leftovers = filesystem.find(final_prefix)
    if leftovers:
        log.warning("%s: removing %d objects left by an interrupted publish", final_prefix, len(leftovers))
        filesystem.rm(leftovers)


def _roll_back(filesystem: Any, copied: list[str]) -> None:
    """Delete what was copied under the final prefix, metadata first (reverse copy order)."""
    for target in reversed(copied):
        try:
            filesystem.rm(target)
        except FileNotFoundError:
            pass
        except Exception as error:  # keep deleting the others; report what could not be removed
            log.error("rollback: could not delete %s (%s)", target, first_line(error))


def _delete_quietly(filesystem: Any, prefix: str) -> None:
    try:
        if filesystem.exists(prefix):
            filesystem.rm(prefix, recursive=True)
    except Exception as error:
        log.warning("could not delete the staging prefix %s (%s); delete it by hand", prefix, first_line(error))


def _published_manifest(build: dict, uri: str, final_prefix: str) -> dict:
    return manifest_for(
        name=build["name"],
        version=build["version"],
        file_format=build["format"],
        data_dir=uri,
        splits=build["splits"],
        files=build["files"],
        local_data_dir=build["local_data_dir"],
        published={"uri": final_prefix, "data_dir": uri},
    )


def finish_dataset(build_path: str | Path, manifest_path: str | Path, publish_to: str | None) -> dict:
    """Write the manifest the training stage reads: the build manifest, or the published one for ``publish_to``."""
    build = read_dataset_manifest(build_path, error=DatasetError).data
    manifest = publish_dataset(build, publish_to) if publish_to else build
    write_json(manifest_path, manifest)
    return manifest
