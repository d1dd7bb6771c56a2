"""One way to call the Hugging Face Hub: retry what is transient, fail at once in one line on what is not.

:func:`call_hub` runs an ``attempt`` (a download, a ``dataset_info``) and retries
transient failures (connection drops, timeouts, 5xx) with exponential backoff. The
Hub's permanent answers (:data:`PERMANENT`: no such repo, gated repo, no such revision,
no such file) are not retried; they become one line naming the config key to check.
``HF_ENDPOINT`` is read per call by :func:`endpoint`, so a mirror (or the tests'
loopback stand-in) set after import is honoured.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from huggingface_hub import errors as hub_errors

from nanogerman.errors import first_line

log = logging.getLogger(__name__)

# Most specific first: GatedRepoError is a kind of RepositoryNotFoundError.
PERMANENT: tuple[type[BaseException], ...] = (
    hub_errors.GatedRepoError,
    hub_errors.RepositoryNotFoundError,
    hub_errors.RevisionNotFoundError,
    hub_errors.EntryNotFoundError,
)


@dataclass(frozen=True)
class HubTarget:
    """What an attempt reads, for the error messages: a repo at a revision, and the config keys that name them."""

    label: str  # what the job is doing, e.g. "shard 3 (hf://datasets/owner/name/...)"
    repo: str
    revision: str | None
    repo_key: str  # the config key that names the repo, e.g. "corpus.location"
    revision_key: str  # the config key that names the revision
    missing_file: str = "file not found in the Hub repo"
    repo_kind: str = "dataset repo"


def endpoint() -> str | None:
    """``HF_ENDPOINT`` now (a mirror or a local stand-in), or None for the public Hub."""
    return os.environ.get("HF_ENDPOINT") or None


def permanent_message(error: BaseException, target: HubTarget) -> str:
    """One line for one of the Hub's permanent answers."""
    if isinstance(error, hub_errors.GatedRepoError):
        return f"{target.label}: the {target.repo_kind} {target.repo!r} is gated; accept its terms on the Hub and set HF_TOKEN"
    if isinstance(error, hub_errors.RepositoryNotFoundError):
        return (
            f"{target.label}: {target.repo_kind} {target.repo!r} not found on the Hub (or it is private; "
            f"check {target.repo_key} and your HF_TOKEN)"
        )
    if isinstance(error, hub_errors.RevisionNotFoundError):
        return f"{target.label}: revision {target.revision!r} not found in {target.repo!r} (check {target.revision_key})"
    return f"{target.label}: {target.missing_file}"


def retry_transient(
    attempt: Callable[[], Any],
    *,
    retries: int,
    backoff_seconds: float,
    label: str,
    permanent: tuple[type[BaseException], ...] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Call ``attempt`` until it succeeds, waiting ``backoff_seconds * 2**k`` between tries.

    Exceptions of the ``permanent`` types are raised at once; anything else is treated as
    transient until the retries run out, then raised.
    """
    for number in range(retries + 1):
        try:
            return attempt()
        except permanent:
            raise
        except Exception as error:
            if number == retries:
                raise
            wait = backoff_seconds * 2**number
            log.warning("%s: attempt %d failed (%s); retrying in %.1f s", label, number + 1, first_line(error), wait)
            sleep(wait)
    raise AssertionError("unreachable")


def call_hub(
    attempt: Callable[[], Any],
    target: HubTarget,
    *,
    retries: int,
    backoff_seconds: float,
    error: type[Exception],
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Run ``attempt`` against the Hub; raise ``error`` with one line when it cannot succeed."""
    try:
        return retry_transient(
            attempt, retries=retries, backoff_seconds=backoff_seconds, label=target.label, permanent=PERMANENT, sleep=sleep
        )
    except PERMANENT as caught:
        raise error(permanent_message(caught, target)) from None
    except Exception as caught:  # transient failures that outlived the retries
        raise error(
            f"{target.label}: the Hub did not answer after {retries + 1} attempts ({first_line(caught)}); "
            "check the network or set HF_ENDPOINT to a mirror"
        ) from None
