"""A local HTTP server speaking the Hub's file-resolve protocol, for tests through the real huggingface_hub client.

Serves `/{repo_id}/resolve/{revision}/{filename}` (HEAD and GET) from local folders, with the headers
huggingface_hub reads (X-Repo-Commit, ETag, Content-Length) and its error codes (RepoNotFound,
RevisionNotFound, EntryNotFound). Binds to 127.0.0.1 only and records every request.

It also takes uploads as `HfApi.create_repo` and `HfApi.upload_folder` send them: POST
/api/repos/create, /api/models/{repo_id}/preupload/{revision} (every file is a "regular" upload, so
no LFS) and /api/models/{repo_id}/commit/{revision} (NDJSON, base64 contents). Pushed repositories
live under `root` and are served back like added ones; `tokens` records each request's bearer token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Path]] = {}  # repo id -> revision -> folder
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.tokens: list[str | None] = []  # the bearer token of each request, None without one
        self.root = Path(tempfile.mkdtemp(prefix="hub-server-"))  # pushed repositories
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                server._answer(self, body=False)

            def do_GET(self) -> None:
                server._answer(self, body=True)

            def do_POST(self) -> None:
                server._receive(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.root, ignore_errors=True)

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

    def _record(self, handler: BaseHTTPRequestHandler) -> str:
        path = unquote(urlparse(handler.path).path)
        self.requests.append((handler.command, path))
        auth = handler.headers.get("Authorization", "")
        self.tokens.append(auth[len("Bearer "):] if auth.startswith("Bearer ") else None)
        return path

    def _receive(self, handler: BaseHTTPRequestHandler) -> None:
        """The upload endpoints: create a repository, plan an upload, commit files."""
        path = self._record(handler)
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            request = json.loads(body)
            repo_id = "/".join(p for p in (request.get("organization"), request["name"]) if p)
            if repo_id in self.repos:  # the Hub answers 409 with the URL, which exist_ok=True reads
                return self._json(handler, {"error": "You already created this model repo",
                                            "url": f"{self.url}/{repo_id}"}, status=409)
            folder = self.root / repo_id
            folder.mkdir(parents=True)
            self.add(repo_id, folder)
            return self._json(handler, {"url": f"{self.url}/{repo_id}"})
        if len(parts) != 6 or parts[:2] != ["api", "models"] or parts[4] not in ("preupload", "commit"):
            return self._error(handler, 404, "EntryNotFound")
        repo_id, action = "/".join(parts[2:4]), parts[4]
        if repo_id not in self.repos:
            return self._error(handler, 404, "RepoNotFound")
        if action == "preupload":
            files = json.loads(body)["files"]
            return self._json(handler, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files]})
        folder = self.repos[repo_id]["main"]
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                target = folder / item["value"]["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(item["value"]["content"]))
            elif item["key"] == "deletedFile":
                (folder / item["value"]["path"]).unlink()
        commit = self.commit(repo_id, "main")
        self._json(handler, {"commitUrl": f"{self.url}/{repo_id}/commit/{commit}", "commitOid": commit,
                             "pullRequestUrl": None})

    @staticmethod
    def _json(handler: BaseHTTPRequestHandler, data: dict, status: int = 200) -> None:
        payload = json.dumps(data).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = self._record(handler)
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
