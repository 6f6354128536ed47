"""A local HTTP server speaking the Hub's file-resolve protocol, for tests through the real huggingface_hub client.

Serves `/{repo_id}/resolve/{revision}/{filename}` (HEAD and GET) from local folders, with the headers
huggingface_hub reads (X-Repo-Commit, ETag, Content-Length) and its error codes (RepoNotFound,
RevisionNotFound, EntryNotFound). Binds to 127.0.0.1 only and records every request.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Path]] = {}  # repo id -> revision -> folder
        self.requests: list[tuple[str, str]] = []  # (method, path)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                server._answer(self, body=False)

            def do_GET(self) -> None:
                server._answer(self, body=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add(self, repo_id: str, folder: Path, revision: str = "main") -> str:
        """Serve `folder` as `revision` of `repo_id`; returns the revision's commit hash."""
        self.repos.setdefault(repo_id, {})[revision] = Path(folder)
        commit = self.commit(repo_id, revision)
        self.repos[repo_id][commit] = Path(folder)
        return commit

    @staticmethod
    def commit(repo_id: str, revision: str) -> str:
        return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()

    def fetched(self, filename: str) -> int:
        """How many GETs downloaded `filename` (any repo)."""
        return sum(1 for method, path in self.requests if method == "GET" and path.endswith("/" + filename))

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append((handler.command, path))
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(handler, 404, "RepoNotFound")
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo_id not in self.repos:
            return self._error(handler, 401, "RepoNotFound")
        revisions = self.repos[repo_id]
        if revision not in revisions:
            return self._error(handler, 404, "RevisionNotFound")
        file = revisions[revision] / filename
        if not file.is_file():
            return self._error(handler, 404, "EntryNotFound")
        data = file.read_bytes()
        commit = self.commit(repo_id, revision) if len(revision) != 40 else revision
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    @staticmethod
    def _error(handler: BaseHTTPRequestHandler, status: int, code: str) -> None:
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
