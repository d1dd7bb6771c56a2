"""Access to ``gs://`` URIs through gcsfs, with the emulator settings tests need.

Real runs use Google's default credentials. When ``STORAGE_EMULATOR_HOST`` is set
(a ``gcp-storage-emulator`` on loopback in the tests), gcsfs talks to it
anonymously; its experimental hierarchical-namespace probing is switched off there
because the emulator does not answer it (each bucket call would hang for 60 s).
"""

from __future__ import annotations

import os


def is_gcs_uri(location: str) -> bool:
    return str(location).startswith("gs://")


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not is_gcs_uri(uri):
        raise ValueError(f"not a gs:// URI: {uri}")
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    return bucket, prefix.strip("/")


def gcs_filesystem():
    """A ``gcsfs.GCSFileSystem`` for the real service or the local emulator."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import gcsfs  # imported late: it is slow to import and only gs:// users need it

    if emulator:
        return gcsfs.GCSFileSystem(endpoint_url=emulator, token="anon", skip_instance_cache=True)
    return gcsfs.GCSFileSystem(skip_instance_cache=True)
