"""nanogerman.provenance: the one git_commit (dirty-aware), package_versions and file_sha256 every manifest uses."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess

import pytest
from conftest import REPO

from nanogerman.provenance import UNKNOWN_COMMIT, file_sha256, git_commit, package_versions


def test_git_commit(tmp_path, monkeypatch):
    monkeypatch.delenv("NANOGERMAN_GIT_COMMIT", raising=False)
    if shutil.which("git") and (REPO / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", git_commit(REPO))
    assert git_commit(tmp_path) == UNKNOWN_COMMIT
    monkeypatch.setenv("NANOGERMAN_GIT_COMMIT", "1234abcd")
    assert git_commit(tmp_path) == "1234abcd"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_marks_a_dirty_tree_but_not_untracked_files(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "tracked.txt").write_text("one\n")
    git("add", "tracked.txt")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "first")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "untracked.txt").write_text("new\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "tracked.txt").write_text("two\n")
    assert git_commit(tmp_path) == f"{head}-dirty"


def test_package_versions_names_missing_packages_as_none():
    found = package_versions(["pyyaml", "no-such-package-here"], python=True)
    assert re.fullmatch(r"\d+\.\d+\.\d+", found["python"])
    assert found["pyyaml"] and found["no-such-package-here"] is None


def test_file_sha256_reads_in_chunks(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert file_sha256(path, chunk_bytes=1000) == hashlib.sha256(data).hexdigest()


def test_hub_permanent_answers_are_one_line_and_a_gated_repo_is_not_called_missing():
    from huggingface_hub import errors as hub_errors

    from nanogerman.hub import HubTarget, call_hub

    class Failed(Exception):
        pass

    target = HubTarget("shard 3", "owner/data", "main", repo_key="corpus.location", revision_key="corpus.revision")
    response = type("Response", (), {"status_code": 403, "headers": {}, "request": None})()

    def gated():
        raise hub_errors.GatedRepoError("gated", response=response)

    with pytest.raises(Failed, match=r"^shard 3: the dataset repo 'owner/data' is gated; accept its terms"):
        call_hub(gated, target, retries=3, backoff_seconds=0, error=Failed, sleep=lambda _: pytest.fail("retried"))
    waits = []
    with pytest.raises(Failed, match=r"^shard 3: the Hub did not answer after 3 attempts \(down\)"):
        call_hub(
            lambda: (_ for _ in ()).throw(ConnectionError("down")),
            target,
            retries=2,
            backoff_seconds=1,
            error=Failed,
            sleep=waits.append,
        )
    assert waits == [1, 2]
