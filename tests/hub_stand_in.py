"""A loopback stand-in for the Hugging Face Hub's file routes, for tests.

It serves repos from a local folder laid out like the Hub::

    <root>/datasets/<owner>/<name>/<files>     (repo_type="dataset")
    <root>/models/<owner>/<name>/<files>       (models)

through the routes the real ``huggingface_hub`` client uses
(``HEAD``/``GET /[datasets/]<owner>/<name>/resolve/<revision>/<path>``, with the
``X-Repo-Commit``, ``ETag`` and ``X-Error-Code`` headers it reads, and byte ranges
for resumed downloads) plus the minimal ``/api/<models|datasets>/<repo>`` info
route. Point the client at it with ``HF_ENDPOINT`` or ``endpoint=``.

``fail(fragment, times, status)`` makes the next ``times`` requests whose path
contains ``fragment`` fail with ``status``, to exercise retries; ``status="cut"``
sends the headers and half the body, then drops the connection (a download
interrupted midway, which the client resumes with a ``Range`` request).
``ranges`` records the ``Range`` header of every GET.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

_RESOLVE = re.compile(r"^/(?:(?P<kind>datasets|models)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/(?P<kind>datasets|models)/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<revision>[^/]+))?$")


class HubStandIn:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.ranges: list[str | None] = []  # Range header of each GET
        self._failures: list[list] = []  # [fragment, remaining, status, method or None]
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, fragment: str, times: int, status: int | str = 503, method: str | None = None) -> None:
        """Fail the next ``times`` requests (of ``method``, if given) whose path contains ``fragment``."""
        with self._lock:
            self._failures.append([fragment, times, status, method])

    def commit_of(self, repo_folder: Path) -> str:
        """A stable 40-hex 'commit' for a repo folder: sha1 of its file names and contents."""
        digest = hashlib.sha1()
        for path in sorted(p for p in repo_folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(repo_folder)).encode())
            digest.update(hashlib.sha1(path.read_bytes()).digest())
        return digest.hexdigest()

    def _take_failure(self, method: str, path: str) -> int | str | None:
        with self._lock:
            for failure in self._failures:
                if failure[0] in path and failure[1] > 0 and failure[3] in (None, method):
                    failure[1] -= 1
                    return failure[2]
        return None

    def _handler_class(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_HEAD(self):
                self._serve(send_body=False)

            def do_GET(self):
                self._serve(send_body=True)

            def _error(self, status: int, code: str | None = None, commit: str | None = None):
                body = json.dumps({"error": code or "error"}).encode()
                self.send_response(status)
                if code:
                    self.send_header("X-Error-Code", code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _serve(self, send_body: bool):
                path = unquote(urlparse(self.path).path)
                with hub._lock:
                    hub.requests.append((self.command, path))
                if self.command == "GET":
                    with hub._lock:
                        hub.ranges.append(self.headers.get("Range"))
                status = hub._take_failure(self.command, path)
                cut = status == "cut"
                if status is not None and not cut:
                    return self._error(status)
                if match := _API.match(path):
                    return self._api(match, send_body)
                match = _RESOLVE.match(path)
                if not match:
                    return self._error(404)
                kind = match["kind"] or "models"
                repo_folder = hub.root / kind / match["repo"]
                if not repo_folder.is_dir():
                    return self._error(401, "RepoNotFound")
                commit = hub.commit_of(repo_folder)
                if match["revision"] not in ("main", commit):
                    return self._error(404, "RevisionNotFound")
                file_path = repo_folder / match["path"]
                if not file_path.is_file():
                    return self._error(404, "EntryNotFound", commit)
                data = file_path.read_bytes()
                start = 0
                range_header = self.headers.get("Range")
                if range_header and (found := re.match(r"bytes=(\d+)-", range_header)):
                    start = int(found[1])
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if send_body and cut:
                    self.wfile.write(data[start : start + (len(data) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if send_body:
                    self.wfile.write(data[start:])

            def _api(self, match, send_body: bool):
                repo_folder = hub.root / match["kind"] / match["repo"]
                if not repo_folder.is_dir():
                    return self._error(401, "RepoNotFound")
                commit = hub.commit_of(repo_folder)
                if match["revision"] not in (None, "main", commit):
                    return self._error(404, "RevisionNotFound")
                files = sorted(str(p.relative_to(repo_folder)) for p in repo_folder.rglob("*") if p.is_file())
                body = json.dumps(
                    {"id": match["repo"], "sha": commit, "siblings": [{"rfilename": name} for name in files], "private": False}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

        return Handler
