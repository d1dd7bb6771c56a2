"""Publishing a checked export to a Hub model repo (off by default)."""

from __future__ import annotations

import logging
from pathlib import Path

from nanogerman.atomic import write_json
from nanogerman.errors import StageError, first_line

log = logging.getLogger(__name__)


class PublishError(StageError):
    """The upload to the Hub failed."""


def publish_export(
    folder: str | Path,
    repo_id: str,
    out: str | Path,
    *,
    private: bool,
    endpoint: str | None = None,
    token: str | None = None,
) -> dict:
    """Upload an exported folder to the Hub model repo ``repo_id`` (created if needed) in one commit; write a receipt.

    ``huggingface_hub``'s own upload (``create_repo``, ``create_commit``): the Hub decides per
    file whether it goes as a regular or a large (LFS/Xet) file. Uses ``HF_TOKEN`` and
    ``HF_ENDPOINT`` unless ``token``/``endpoint`` are given.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    if not (folder / "logits_check.json").is_file():
        raise PublishError(f"{folder}: not a checked export (no logits_check.json); rerun the export")
    files = sorted(path for path in folder.iterdir() if path.is_file())
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.create_commit(
            repo_id,
            repo_type="model",
            operations=[CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path)) for path in files],
            commit_message=f"nanogerman export of run {folder.name}",
        )
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise PublishError(f"publishing {folder} to {repo_id} failed: {type(error).__name__}: {first_line(error)}") from None
    receipt = {
        "repo_id": repo_id,
        "private": private,
        "commit": commit.oid,
        "commit_url": str(commit.commit_url),
        "endpoint": api.endpoint,
        "files": [path.name for path in files],
    }
    write_json(out, receipt)
    log.info("published %s to %s (commit %s)", folder, repo_id, commit.oid)
    return receipt
