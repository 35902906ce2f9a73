"""A real HTTP server on 127.0.0.1 that speaks enough of the Hugging Face Hub API for
``huggingface_hub`` to download from it (point ``HF_ENDPOINT`` at :attr:`LocalHub.url`).

It serves what ``snapshot_download`` / ``hf_hub_download`` ask for:

* ``GET /api/models/{repo}[/revision/{rev}]`` -> ``{"id", "sha", "siblings": [{"rfilename", "size"}]}``
  (``rev``: ``main``, the newest version, or the commit sha of any version :meth:`LocalHub.add` made)
* ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=true`` -> the file entries (``oid`` git
  blob id, ``size``, ``lfs`` for large files)
* ``HEAD|GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ``Content-Length``
  (and ``Range`` for resumed downloads)
* unknown repos answer 404 with ``X-Error-Code: RepoNotFound``, as the Hub does.

Faults for the tests: ``fail[path] = 500`` answers that status for that file's download;
``truncate[path] = n`` sends only the first n bytes of the body and closes the connection;
``stall[path] = n`` sends the first n bytes, then nothing until the server stops (``stall["api"]``:
the listing call is accepted and never answered); ``serve[path] = bytes`` sends other bytes (with
their length) than the listing describes; ``listed_size[path] = n`` advertises another size in
the listing;
``fail["api"] = status`` answers that status to the listing call, and ``fail_headers[path]`` adds
headers to a ``fail`` answer (``{"X-Error-Code": "GatedRepo"}``, ``{"Retry-After": "0"}``);
``redirect[path] = True`` answers the download with a redirect to itself, forever;
``endless[path] = True`` answers it with a body without a length that never ends (``endless["api"]``:
the listing);
``token = "hf_..."`` makes every repo private: a request without ``Authorization: Bearer <token>``
is answered 401 (as the Hub answers a private repo, or a token it refuses);
``private[repo] = "hf_..."`` does so for one repo; ``gated[repo] = "hf_..."`` makes one repo gated, its
terms accepted by that token only: a request without a token is answered 401, with another 403, both
with ``X-Error-Code: GatedRepo`` (as the Hub answers).
Every request is recorded in :attr:`requests` (method, path).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_THRESHOLD = 10_000  # bytes: larger files are listed as LFS objects (sha256 ETag), as on the Hub


class Repo:
    def __init__(self, repo_id: str, files: dict[str, bytes]):
        self.repo_id, self.files = repo_id, dict(files)
        listing = json.dumps(sorted((p, hashlib.sha256(b).hexdigest()) for p, b in self.files.items()))
        self.sha = hashlib.sha1(listing.encode()).hexdigest()

    @staticmethod
    def blob_id(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def etag(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if len(data) > LFS_THRESHOLD else self.blob_id(data)

    def tree_entry(self, path: str) -> dict:
        data = self.files[path]
        entry = {"type": "file", "oid": self.blob_id(data), "size": len(data), "path": path}
        if len(data) > LFS_THRESHOLD:
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry


class LocalHub:
    """``with LocalHub() as hub: hub.add("acme/x", {"config.json": b"..."}); ... hub.url``"""

    def __init__(self):
        self.repos: dict[str, Repo] = {}  # the newest version of each repo ("main")
        self.versions: dict[str, dict[str, Repo]] = {}  # every version of each repo, by commit sha
        self.requests: list[tuple[str, str]] = []
        self.fail: dict[str, int] = {}
        self.truncate: dict[str, int] = {}
        self.stall: dict[str, int] = {}
        self.serve: dict[str, bytes] = {}
        self.listed_size: dict[str, int] = {}
        self.fail_headers: dict[str, dict] = {}
        self.redirect: dict[str, bool] = {}
        self.endless: dict[str, bool] = {}
        self.token: str | None = None
        self.private: dict[str, str] = {}
        self.gated: dict[str, str] = {}
        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo_id: str, files: dict[str, bytes | Path]) -> Repo:
        data = {p: (f.read_bytes() if isinstance(f, Path) else bytes(f)) for p, f in files.items()}
        self.repos[repo_id] = Repo(repo_id, data)  # adding again makes a new version, the new "main"
        self.versions.setdefault(repo_id, {})[self.repos[repo_id].sha] = self.repos[repo_id]
        return self.repos[repo_id]

    def version(self, repo: Repo, rev: str) -> Repo | None:
        return repo if rev == "main" else self.versions.get(repo.repo_id, {}).get(rev)

    def add_folder(self, repo_id: str, folder: Path, skip: tuple[str, ...] = ()) -> Repo:
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add(repo_id, {k: v for k, v in files.items() if not any(Path(k).match(s) for s in skip)})

    def downloads(self) -> list[str]:
        """``repo:path`` of every file body sent (GET .../resolve/...)."""
        out = []
        for method, path in self.requests:
            if method == "GET" and "/resolve/" in path:
                repo, rest = path.strip("/").split("/resolve/", 1)
                out.append(f"{unquote(repo)}:{unquote(rest.split('/', 1)[1])}")
        return out

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    # ---- the request handler ------------------------------------------------------------------
    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def send_json(self, obj, status: int = 200):
                self.send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

            def not_found(self, code: str = "RepoNotFound", head: bool = False):
                self.send(404, b'{"error": "not found"}', {"X-Error-Code": code, "Content-Type": "application/json"},
                          head=head)

            def find_repo(self, parts: list[str]) -> tuple[Repo | None, list[str]]:
                if len(parts) >= 2 and "/".join(parts[:2]) in hub.repos:
                    return hub.repos["/".join(parts[:2])], parts[2:]
                return None, parts

            def do_HEAD(self):
                self.handle_any(head=True)

            def do_GET(self):
                self.handle_any(head=False)

            def handle_any(self, head: bool):
                hub.requests.append(("HEAD" if head else "GET", self.path))
                url = urlsplit(self.path)
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self.send(401, b'{"error": "Invalid credentials in Authorization header"}',
                                     {"Content-Type": "application/json",
                                      "X-Error-Message": "Invalid credentials in Authorization header"}, head=head)
                refused = self.refused(parts[2:] if parts[:2] == ["api", "models"] else parts)
                if refused:
                    status, headers = refused
                    return self.send(status, b'{"error": "Access to this model is restricted"}',
                                     {"Content-Type": "application/json", **headers}, head=head)
                if parts[:2] == ["api", "models"]:
                    return self.api(parts[2:], url.query)
                repo, rest = self.find_repo(parts)
                if repo is None:
                    return self.not_found(head=head)
                if len(rest) >= 3 and rest[0] == "resolve":
                    return self.resolve(repo, rest[1], "/".join(rest[2:]), head)
                return self.not_found("EntryNotFound", head=head)

            def refused(self, parts: list[str]) -> tuple[int, dict] | None:
                """The answer to a request for a private or gated repo without its token."""
                repo_id, sent = "/".join(parts[:2]), self.headers.get("Authorization")
                if repo_id in hub.private and sent != f"Bearer {hub.private[repo_id]}":
                    return 401, {"X-Error-Message": "Invalid credentials in Authorization header"}
                if repo_id in hub.gated and sent != f"Bearer {hub.gated[repo_id]}":
                    return 401 if sent is None else 403, {"X-Error-Code": "GatedRepo",
                                                          "X-Error-Message": "Access to this model is restricted"}
                return None

            def api(self, parts: list[str], query: str):
                repo, rest = self.find_repo(parts)
                if repo is None:
                    return self.not_found()
                if "api" in hub.fail:
                    return self.send(hub.fail["api"], b'{"error": "refused"}',
                                     {"Content-Type": "application/json", **hub.fail_headers.get("api", {})})
                if "api" in hub.endless:  # a listing that never ends
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    try:
                        self.wfile.write(b'{"id": "x", "siblings": [')
                        while not hub.stopping.is_set():
                            self.wfile.write(b'{"rfilename": "x", "size": 1}, ' * 2048)
                    except OSError:
                        pass
                    return
                if "api" in hub.stall:
                    hub.stopping.wait()
                    return
                if not rest or rest[0] == "revision":
                    repo = hub.version(repo, rest[1]) if rest else repo
                    if repo is None:
                        return self.not_found("RevisionNotFound")
                    return self.send_json({"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha,
                                           "private": False, "disabled": False, "gated": False,
                                           "siblings": [self.sibling(repo, p) for p in sorted(repo.files)]})
                if rest[0] == "tree":
                    repo = hub.version(repo, rest[1]) if len(rest) > 1 else repo
                    if repo is None:
                        return self.not_found("RevisionNotFound")
                    prefix = "/".join(rest[2:])
                    paths = [p for p in sorted(repo.files) if not prefix or p.startswith(prefix.rstrip("/") + "/")]
                    if "recursive=true" not in query.lower():
                        paths = [p for p in paths if "/" not in p[len(prefix):].strip("/")]
                    return self.send_json([repo.tree_entry(p) for p in paths])
                return self.not_found("EntryNotFound")

            def sibling(self, repo: Repo, path: str) -> dict:
                entry = repo.tree_entry(path)
                out = {"rfilename": path, "size": hub.listed_size.get(path, entry["size"]), "blobId": entry["oid"]}
                if "lfs" in entry:
                    out["lfs"] = {"sha256": entry["lfs"]["oid"], "size": out["size"], "pointerSize": 134}
                return out

            def resolve(self, repo: Repo, rev: str, path: str, head: bool):
                found = hub.version(repo, rev)
                if found is None or path not in found.files:
                    return self.not_found("EntryNotFound" if found is not None else "RevisionNotFound", head=head)
                repo = found
                data = hub.serve.get(path, repo.files[path])
                headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{repo.etag(path)}"', "Accept-Ranges": "bytes",
                           "Content-Type": "application/octet-stream"}
                if not head and path in hub.fail:
                    return self.send(hub.fail[path], b"server error",
                                     {"Content-Type": "text/plain", **hub.fail_headers.get(path, {})})
                if not head and path in hub.redirect:
                    return self.send(302, b"", {"Location": self.path})
                if not head and path in hub.endless:
                    self.send_response(200)
                    for k, v in headers.items():
                        self.send_header(k, str(v))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    chunk = b"\0" * 65536
                    try:
                        while not hub.stopping.is_set():
                            self.wfile.write(chunk)
                    except OSError:  # the client hung up
                        pass
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and not head:
                    start = int(rng[6:].split("-")[0] or 0)
                body = data[start:]
                headers["Content-Length"] = len(body)
                if not head and path in hub.truncate:
                    self.send_response(206 if start else 200)
                    for k, v in headers.items():
                        self.send_header(k, str(v))
                    self.end_headers()
                    self.wfile.write(body[: hub.truncate[path]])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if not head and path in hub.stall:
                    self.send_response(206 if start else 200)
                    for k, v in headers.items():
                        self.send_header(k, str(v))
                    self.end_headers()
                    self.wfile.write(body[: hub.stall[path]])
                    self.wfile.flush()
                    hub.stopping.wait()
                    self.close_connection = True
                    return
                if start:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                self.send(206 if start else 200, body, headers, head=head)

        return Handler
