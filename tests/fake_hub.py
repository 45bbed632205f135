"""A small local stand-in for the Hugging Face Hub HTTP API, for push/pull tests without the network.

It speaks just enough of the API that `huggingface_hub` 2.4 uses on the classic (non-Xet) path:

- ``POST /api/repos/create``                                  create_repo (409 if it exists)
- ``GET  /api/whoami-v2``                                     whoami
- ``POST /api/validate-yaml``                                 README.md front-matter check done by create_commit
                                                               (`card_metadata_errors`: the Hub's metadata rules;
                                                               a commit of a README.md that breaks them is a 400 too)
- ``GET  /api/{type}s/{repo_id}[/revision/{rev}]``            model_info / repo_info (``siblings``, ``sha``)
- ``GET  /api/{type}s/{repo_id}/tree/{rev}[/{path}]``         list_repo_tree
- ``POST /api/{type}s/{repo_id}/paths-info/{rev}``            get_paths_info
- ``POST /api/{type}s/{repo_id}/preupload/{rev}``             upload mode (lfs / regular) per file
- ``POST /{repo_id}.git/info/lfs/objects/batch``              LFS batch API, "basic" transfer
- ``PUT  /__lfs/upload/{oid}``, ``POST /__lfs/verify/{oid}``  where the batch actions point to
- ``POST /api/{type}s/{repo_id}/commit/{rev}``                NDJSON commit (header / file / lfsFile / deleted*)
- ``GET|HEAD /{repo_id}/resolve/{rev}/{path}``                file download with the metadata headers
  ``hf_hub_download`` needs (X-Repo-Commit, ETag, X-Linked-Etag / X-Linked-Size for LFS, Content-Length)

Dataset repos are served by the same routes (``/api/datasets/...``, ``/datasets/{repo_id}/resolve/...``): that is
all `datasets.load_dataset("user/name")` asks for. `FakeHub.put_files` seeds a repo without an upload client.

Anything else answers 501 with the method and path and is recorded in ``FakeHub.unknown`` (and printed to stderr),
so a test can assert nothing unexpected was called.

Clients point at it with ``HF_ENDPOINT=<hub.endpoint>`` and ``HF_HUB_DISABLE_XET=1`` set *before* importing
`huggingface_hub` (it reads both at import time), e.g. in a subprocess environment.

Usage::

    from tests.fake_hub import fake_hub, start_fake_hub   # `fake_hub` is a pytest fixture

    with start_fake_hub() as hub:
        env = {**os.environ, **hub.client_env(hf_home)}
        ...
        assert hub.lfs_uploads  # list of {"oid", "size"} the server received through LFS
        hub.request_auth        # (method, path, Authorization header) of every request
        hub.received_files()    # every file content ever stored, to grep for what must not be uploaded
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

FAKE_USER = "fake-user"

# What a freshly created Hub repo gets as first commit (abridged version of the Hub's default).
DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.gguf filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""

# The Hub stores anything above 10 MB as LFS regardless of .gitattributes, and binary content too.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO_ID = rf"(?:{_NAME}/)?{_NAME}"


# The license identifiers the Hub accepts, in the order of its own error message ("license" must be one of [...]),
# quoted in huggingface_hub issue #4218 (2026-05). Kept here, apart from the library's copy, so that the fake server
# checks cards against the Hub's list rather than against what the card writer believes.
HUB_LICENSES = (
    "apache-2.0, mit, openrail, bigscience-openrail-m, creativeml-openrail-m, bigscience-bloom-rail-1.0, "
    "bigcode-openrail-m, afl-3.0, artistic-2.0, bsl-1.0, bsd, bsd-2-clause, bsd-3-clause, bsd-3-clause-clear, c-uda, "
    "cc, cc0-1.0, cc-by-2.0, cc-by-2.5, cc-by-3.0, cc-by-4.0, cc-by-sa-3.0, cc-by-sa-4.0, cc-by-nc-2.0, cc-by-nc-3.0, "
    "cc-by-nc-4.0, cc-by-nd-4.0, cc-by-nc-nd-3.0, cc-by-nc-nd-4.0, cc-by-nc-sa-2.0, cc-by-nc-sa-3.0, cc-by-nc-sa-4.0, "
    "cdla-sharing-1.0, cdla-permissive-1.0, cdla-permissive-2.0, wtfpl, ecl-2.0, epl-1.0, epl-2.0, etalab-2.0, "
    "eupl-1.1, eupl-1.2, agpl-3.0, gfdl, gpl, gpl-2.0, gpl-3.0, lgpl, lgpl-2.1, lgpl-3.0, isc, h-research, "
    "intel-research, lppl-1.3c, ms-pl, apple-ascl, apple-amlr, mpl-2.0, odc-by, odbl, openmdw-1.0, openrail++, "
    "osl-3.0, postgresql, ofl-1.1, ncsa, unlicense, zlib, pddl, lgpl-lr, deepfloyd-if-license, "
    "fair-noncommercial-research-license, llama2, llama3, llama3.1, llama3.2, llama3.3, llama4, grok2-community, "
    "gemma, unknown, other"
).split(", ")


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _repo_id_error(field_name: str, value, kind: str) -> str | None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if not isinstance(value, str):
            raise HFValidationError("not a string")
        validate_repo_id(value)
    except HFValidationError:
        return f'"{field_name}" with value "{value}" is not valid. Use a {kind} id from https://hf.co/{kind}s.'
    return None


def _model_index_errors(model_index) -> list[str]:
    """The model-index shape the Hub requires: `[{name, results: [{task: {type}, dataset: {type, name},
    metrics: [{type, value}]}]}]` (hub-docs modelcard.md), numbers or strings as values."""
    errors = []
    if not isinstance(model_index, list) or not model_index:
        return ['"model-index" must be a non-empty array']
    for i, entry in enumerate(model_index):
        where = f'"model-index[{i}]"'
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append(f'{where}.name is required and must be a string')
            continue
        results = entry.get("results")
        if not isinstance(results, list) or not results:
            errors.append(f"{where}.results must be a non-empty array")
            continue
        for j, result in enumerate(results):
            at = f"{where}.results[{j}]"
            task, dataset, metrics = (result.get(k) if isinstance(result, dict) else None
                                      for k in ("task", "dataset", "metrics"))
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f"{at}.task.type is required and must be a string")
            if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("type", "name")):
                errors.append(f"{at}.dataset.type and .name are required and must be strings")
            if not isinstance(metrics, list) or not metrics:
                errors.append(f"{at}.metrics must be a non-empty array")
                continue
            for k, metric in enumerate(metrics):
                ok = (isinstance(metric, dict) and isinstance(metric.get("type"), str)
                      and isinstance(metric.get("value"), (int, float, str)) and not isinstance(metric["value"], bool))
                if not ok:
                    errors.append(f"{at}.metrics[{k}] needs a string `type` and a number or string `value`")
    return errors


def card_metadata_errors(content: str, repo_type: str = "model") -> list[str]:
    """What the Hub objects to in a README.md's YAML front matter (empty: accepted).

    The checks the Hub applies on upload: the front matter parses as a YAML mapping; `license` is one of its
    identifiers; `base_model` (models) and `datasets` entries are valid repo ids (no local paths); `tags` are
    strings; `model-index` has the required shape.
    """
    import yaml

    if not content.startswith("---"):
        return []
    end = content.find("\n---", 3)
    if end == -1:
        return ["unterminated YAML front matter"]
    try:
        data = yaml.safe_load(content[3:end])
    except yaml.YAMLError as exc:
        return [f"invalid YAML: {exc}"]
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["YAML front matter must be a mapping"]
    errors = []
    for license_id in _as_list(data.get("license", [])):
        if license_id not in HUB_LICENSES:
            errors.append(f'"license" must be one of [{", ".join(HUB_LICENSES)}, array]')
    if repo_type == "model":
        errors += [e for v in _as_list(data.get("base_model", [])) if (e := _repo_id_error("base_model", v, "model"))]
    errors += [e for v in _as_list(data.get("datasets", [])) if (e := _repo_id_error("datasets", v, "dataset"))]
    if not all(isinstance(tag, str) for tag in _as_list(data.get("tags", []))):
        errors.append('"tags" must be an array of strings')
    if "model-index" in data:
        errors += _model_index_errors(data["model-index"])
    return errors


def git_blob_oid(data: bytes) -> str:
    """The git SHA-1 of a blob, which the Hub uses as ETag / oid of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


@dataclass
class FileEntry:
    size: int
    lfs: bool
    sha256: str  # content sha256 (the LFS oid for LFS files)
    git_oid: str  # git blob oid of what git stores: the content, or the LFS pointer for LFS files

    def oid_for_preupload(self) -> str:
        # `CommitOperationAdd._local_oid`: sha256 for LFS files, git blob sha1 for regular ones.
        return self.sha256 if self.lfs else self.git_oid

    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    date: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class FakeHub:
    """Server state + storage. ``endpoint`` is the base URL, ``root`` the storage directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.unknown: list[str] = []  # "METHOD /path" of unhandled routes
        self.lfs_uploads: list[dict] = []  # {"oid", "size"} received through the LFS PUT
        self.regular_uploads: list[str] = []  # paths committed inline (base64) in commit payloads
        self.lfs_commits: list[str] = []  # paths committed as lfsFile
        self.commit_payloads: list[list[dict]] = []  # parsed NDJSON of every commit (file contents elided)
        self.auth_headers: list[str | None] = []  # Authorization header of write requests
        self.request_auth: list[tuple[str, str, str | None]] = []  # (method, path, Authorization) of every request
        self.rejected_cards: list[list[str]] = []  # the metadata errors of every README.md commit refused
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # ----------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def client_env(self, hf_home: str | Path, token: str = "hf_fake") -> dict[str, str]:
        """Environment variables that point a fresh `huggingface_hub` process at this server."""
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_TOKEN": token,
            "HF_HOME": str(hf_home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    # ----------------------------------------------------------------------------------------------- storage
    def _object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256

    def _store_object(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self._object_path(sha)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha

    def has_object(self, sha256: str) -> bool:
        return self._object_path(sha256).exists()

    # ----------------------------------------------------------------------------------------------- repo state
    def get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository Not Found: {repo_id}", "RepoNotFound")
        return repo

    def resolve_revision(self, repo: Repo, revision: str) -> Commit:
        revision = unquote(revision)
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        matches = [oid for oid in repo.commits if oid.startswith(revision)] if len(revision) >= 7 else []
        if len(matches) == 1:
            return repo.commits[matches[0]]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _new_commit(self, repo: Repo, branch: str, title: str, description: str, files: dict[str, FileEntry]):
        parent = repo.branches.get(branch)
        seed = f"{repo.repo_id}\n{parent}\n{title}\n{time.time_ns()}\n{sorted((p, f.git_oid) for p, f in files.items())}"
        oid = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[oid] = Commit(oid, parent, title, description, _now_iso(), files)
        repo.branches[branch] = oid
        return repo.commits[oid]

    def _regular_entry(self, data: bytes) -> FileEntry:
        return FileEntry(size=len(data), lfs=False, sha256=self._store_object(data), git_oid=git_blob_oid(data))

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> tuple[Repo, bool]:
        with self.lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                return self.repos[key], False
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now_iso())
            self.repos[key] = repo
            files = {".gitattributes": self._regular_entry(DEFAULT_GITATTRIBUTES.encode())}
            self._new_commit(repo, "main", "initial commit", "", files)
            return repo, True

    def put_files(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model",
                  title: str = "add files") -> Commit:
        """Create the repo if needed and commit ``files`` (path -> content) to ``main``, as regular files: how a
        test seeds a repo (e.g. a dataset for `datasets.load_dataset`) without going through an upload client."""
        with self.lock:
            repo, _ = self.create_repo(repo_type, repo_id, private=False)
            current = dict(repo.commits[repo.branches["main"]].files)
            current.update({path: self._regular_entry(data) for path, data in files.items()})
            return self._new_commit(repo, "main", title, "", current)

    def read_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        """Content of a file as stored on the fake Hub (for assertions)."""
        with self.lock:
            commit = self.resolve_revision(self.get_repo(repo_type, repo_id), revision)
            entry = commit.files[path]
        return self._object_path(entry.sha256).read_bytes()

    def received_files(self) -> dict[str, bytes]:
        """Every file content the server ever stored (inline commit files and LFS uploads), keyed by its sha256."""
        with self.lock:
            return {p.name: p.read_bytes() for p in (self.root / "objects").iterdir() if ".tmp" not in p.name}

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, FileEntry]:
        with self.lock:
            return dict(self.resolve_revision(self.get_repo(repo_type, repo_id), revision).files)

    def repo_url(self, repo: Repo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo.repo_id}"

    # ----------------------------------------------------------------------------------------------- upload mode
    @staticmethod
    def _gitattributes_lfs_patterns(content: str) -> list[str]:
        patterns = []
        for line in content.splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    def upload_mode(self, commit: Commit, path: str, size: int, sample: bytes) -> str:
        gitattributes = commit.files.get(".gitattributes")
        content = self._object_path(gitattributes.sha256).read_text() if gitattributes else ""
        name = path.rsplit("/", 1)[-1]
        for pattern in self._gitattributes_lfs_patterns(content):
            if fnmatch.fnmatch(name if "/" not in pattern else path, pattern):
                return "lfs"
        if size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
            return "lfs"
        return "regular"

    # ----------------------------------------------------------------------------------------------- JSON views
    def file_json(self, path: str, entry: FileEntry, commit: Commit | None = None) -> dict:
        out = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
        if entry.lfs:
            out["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(_lfs_pointer(entry.sha256, entry.size))}
        if commit is not None:
            out["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return out

    def repo_info_json(self, repo: Repo, commit: Commit, blobs: bool) -> dict:
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sib: dict = {"rfilename": path}
            if blobs:
                sib["size"] = entry.size
                sib["blobId"] = entry.git_oid
                if entry.lfs:
                    sib["lfs"] = {
                        "sha256": entry.sha256,
                        "size": entry.size,
                        "pointerSize": len(_lfs_pointer(entry.sha256, entry.size)),
                    }
            siblings.append(sib)
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": author,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            info["library_name"] = "transformers" if "config.json" in commit.files else None
        return info


class _Handler(BaseHTTPRequestHandler):
    fake_hub: FakeHub  # set on the subclass built in FakeHub.start
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/0.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet; requests are recorded in FakeHub.requests
        pass

    # ------------------------------------------------------------------------------------------------- plumbing
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline().strip()
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.fake_hub.requests.append((self.command, self.path, status))

    def _json(self, status: int, obj, headers: dict | None = None, content_type: str = "application/json"):
        self._send(status, json.dumps(obj).encode(), headers, content_type)

    def _error(self, err: HubError):
        headers = {"X-Error-Message": " ".join(err.message.splitlines())}  # a header is one line
        if err.error_code:
            headers["X-Error-Code"] = err.error_code
        self._json(err.status, {"error": err.message}, headers)

    def _require_auth(self):
        auth = self.headers.get("Authorization")
        self.fake_hub.auth_headers.append(auth)
        if not auth or not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            raise HubError(401, "Invalid username or password.")

    def _dispatch(self):
        self.fake_hub.request_auth.append((self.command, self.path, self.headers.get("Authorization")))
        parsed = urlsplit(self.path)
        path, query = parsed.path, parse_qs(parsed.query)
        body = self._read_body() if self.command in ("POST", "PUT") else b""
        try:
            for method, pattern, handler in _ROUTES:
                if method != self.command and not (method == "GET" and self.command == "HEAD"):
                    continue
                m = re.fullmatch(pattern, path)
                if m:
                    return handler(self, m, query, body)
            msg = f"fake_hub: unhandled route {self.command} {self.path}"
            print(msg, file=sys.stderr, flush=True)
            self.fake_hub.unknown.append(f"{self.command} {self.path}")
            self._send(501, msg.encode(), {"X-Error-Message": msg}, content_type="text/plain")
        except HubError as err:
            self._error(err)
        except Exception as exc:  # a bug in the fake: make it loud
            msg = f"fake_hub: internal error on {self.command} {self.path}: {exc!r}"
            print(msg, file=sys.stderr, flush=True)
            self.fake_hub.unknown.append(msg)
            self._send(500, msg.encode(), {"X-Error-Message": msg[:500]}, content_type="text/plain")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # ------------------------------------------------------------------------------------------------- routes
    def whoami(self, m, query, body):
        self._require_auth()
        self._json(
            200,
            {
                "type": "user",
                "id": "0" * 24,
                "name": FAKE_USER,
                "fullname": "Fake User",
                "email": None,
                "emailVerified": True,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
            },
        )

    def validate_yaml(self, m, query, body):
        payload = json.loads(body or b"{}")
        errors = card_metadata_errors(payload.get("content", ""), payload.get("repoType") or "model")
        if errors:
            self._json(400, {"errors": [{"message": e} for e in errors], "warnings": []}, {"X-Error-Message": errors[0]})
        else:
            self._json(200, {"errors": [], "warnings": []})

    def create_repo(self, m, query, body):
        self._require_auth()
        payload = json.loads(body or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        repo_type = payload.get("type") or "model"
        if not name or repo_type not in _REPO_TYPES.values():
            raise HubError(400, f"bad create payload: {payload}")
        repo_id = f"{org}/{name}" if org else f"{FAKE_USER}/{name}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo, created = self.fake_hub.create_repo(repo_type, repo_id, private)
        url = self.fake_hub.repo_url(repo)
        if not created:
            return self._json(409, {"error": "You already created this model repo", "url": url})
        self._json(200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def repo_info(self, m, query, body):
        hub = self.fake_hub
        repo_type = _REPO_TYPES[m["type"]]
        with hub.lock:
            repo = hub.get_repo(repo_type, m["repo"])
            commit = hub.resolve_revision(repo, m["rev"] or "main")
            info = hub.repo_info_json(repo, commit, blobs=query.get("blobs", ["false"])[0].lower() == "true")
        self._json(200, info)

    def tree(self, m, query, body):
        hub = self.fake_hub
        repo_type = _REPO_TYPES[m["type"]]
        prefix = unquote(m["path"] or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        with hub.lock:
            repo = hub.get_repo(repo_type, m["repo"])
            commit = hub.resolve_revision(repo, m["rev"])
            files = dict(commit.files)
        if prefix and prefix in files:
            raise HubError(400, f"{prefix} is a file, not a directory")  # the Hub refuses listing a file
        base = f"{prefix}/" if prefix else ""
        under = {p: e for p, e in files.items() if p.startswith(base)}
        if prefix and not under:
            raise HubError(404, f"Entry not found: {prefix}", "EntryNotFound")
        entries, dirs = [], set()
        for path, entry in sorted(under.items()):
            rest = path[len(base) :]
            if "/" in rest:
                parts = rest.split("/")[:-1]
                for i in range(1 if not recursive else len(parts)):
                    dirs.add(base + "/".join(parts[: i + 1]))
                if not recursive:
                    continue
            entries.append(hub.file_json(path, entry, commit if query.get("expand", ["false"])[0] == "true" else None))
        entries += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d} for d in sorted(dirs)]
        self._json(200, entries)

    def paths_info(self, m, query, body):
        hub = self.fake_hub
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            payload = json.loads(body or b"{}")
            paths = payload.get("paths", [])
        else:  # form-encoded: paths=a&paths=b&expand=True
            paths = parse_qs(body.decode()).get("paths", [])
        paths = [paths] if isinstance(paths, str) else paths
        with hub.lock:
            repo = hub.get_repo(_REPO_TYPES[m["type"]], m["repo"])
            commit = hub.resolve_revision(repo, m["rev"])
            out = []
            for p in paths:
                p = p.strip("/")
                if p in commit.files:
                    out.append(hub.file_json(p, commit.files[p]))
                elif any(f.startswith(p + "/") for f in commit.files):
                    out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p})
        self._json(200, out)

    def preupload(self, m, query, body):
        self._require_auth()
        hub = self.fake_hub
        payload = json.loads(body or b"{}")
        with hub.lock:
            repo = hub.get_repo(_REPO_TYPES[m["type"]], m["repo"])
            commit = hub.resolve_revision(repo, m["rev"])
            files = []
            for f in payload.get("files", []):
                sample = base64.b64decode(f.get("sample", ""))
                mode = hub.upload_mode(commit, f["path"], int(f["size"]), sample)
                existing = commit.files.get(f["path"])
                oid = existing.oid_for_preupload() if existing is not None and existing.lfs == (mode == "lfs") else None
                files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": files, "commitOid": commit.oid})

    def lfs_batch(self, m, query, body):
        self._require_auth()
        hub = self.fake_hub
        payload = json.loads(body or b"{}")
        repo_type = _REPO_TYPES[m["type"]] if m["type"] else "model"
        with hub.lock:
            hub.get_repo(repo_type, m["repo"])
        if payload.get("operation") != "upload":
            raise HubError(400, f"fake_hub only supports LFS upload batches, got {payload.get('operation')!r}")
        if "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "fake_hub only supports the basic LFS transfer")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": "invalid oid"}})
                continue
            out = {"oid": oid, "size": size, "authenticated": True}
            if not hub.has_object(oid):  # no "actions" => already present upstream, client skips the upload
                out["actions"] = {
                    "upload": {"href": f"{hub.endpoint}/__lfs/upload/{oid}?size={size}", "header": {}},
                    "verify": {"href": f"{hub.endpoint}/__lfs/verify/{oid}", "header": {}},
                }
            objects.append(out)
        self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, m, query, body):
        hub = self.fake_hub
        oid = m["oid"]
        expected_size = int(query.get("size", [len(body)])[0])
        if len(body) != expected_size:
            raise HubError(400, f"LFS upload size mismatch for {oid}: got {len(body)}, expected {expected_size}")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"LFS upload sha256 mismatch for {oid}")
        hub._store_object(body)
        with hub.lock:
            hub.lfs_uploads.append({"oid": oid, "size": len(body)})
        self._send(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def lfs_verify(self, m, query, body):
        hub = self.fake_hub
        payload = json.loads(body or b"{}")
        oid = m["oid"]
        if payload.get("oid") != oid or not hub.has_object(oid):
            raise HubError(404, f"LFS object {oid} not found", "EntryNotFound")
        if hub._object_path(oid).stat().st_size != int(payload.get("size", -1)):
            raise HubError(400, f"LFS object {oid} size mismatch")
        self._json(200, {"success": True})

    def commit(self, m, query, body):
        self._require_auth()
        hub = self.fake_hub
        if query.get("create_pr", ["0"])[0] in ("1", "true", "True"):
            raise HubError(400, "fake_hub does not implement pull requests")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        branch = unquote(m["rev"])
        with hub.lock:
            repo = hub.get_repo(_REPO_TYPES[m["type"]], m["repo"])
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise HubError(412, f"A commit has happened since. Parent {parent} is not the head {head.oid}")
            files = dict(head.files)
            logged = []
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                path = value.get("path", "").strip("/")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')}")
                    data = base64.b64decode(value["content"])
                    if path == "README.md":
                        errors = card_metadata_errors(data.decode("utf-8", "replace"), repo.repo_type)
                        if errors:
                            hub.rejected_cards.append(errors)
                            listed = "\n".join(f"- {e}" for e in errors)
                            raise HubError(400, f"Invalid metadata in README.md.\n{listed}")
                    files[path] = hub._regular_entry(data)
                    hub.regular_uploads.append(path)
                    logged.append({"key": key, "value": {"path": path, "size": len(data)}})
                elif key == "lfsFile":
                    oid = value["oid"]
                    if not hub.has_object(oid):
                        raise HubError(422, f"LFS object {oid} for {path} was never uploaded")
                    size = hub._object_path(oid).stat().st_size
                    if "size" in value and int(value["size"]) != size:
                        raise HubError(422, f"LFS object {oid} size mismatch for {path}")
                    files[path] = FileEntry(size=size, lfs=True, sha256=oid, git_oid=git_blob_oid(_lfs_pointer(oid, size)))
                    hub.lfs_commits.append(path)
                    logged.append(line)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[path]
                    logged.append(line)
                elif key == "deletedFolder":
                    for p in [p for p in files if p.startswith(path + "/")]:
                        del files[p]
                    logged.append(line)
                else:
                    raise HubError(400, f"fake_hub: unsupported commit operation {key!r}")
            new = hub._new_commit(repo, branch, header.get("summary", ""), header.get("description", ""), files)
            hub.commit_payloads.append([lines[0], *logged])
            url = f"{hub.repo_url(repo)}/commit/{new.oid}"
        self._json(200, {"success": True, "commitOid": new.oid, "commitUrl": url, "hookOutput": ""})

    def resolve(self, m, query, body):
        hub = self.fake_hub
        repo_type = _REPO_TYPES[m["type"]] if m["type"] else "model"
        path = unquote(m["path"])
        with hub.lock:
            repo = hub.get_repo(repo_type, m["repo"])
            commit = hub.resolve_revision(repo, m["rev"])
            entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound")
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{entry.etag()}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{quote(path.rsplit("/", 1)[-1])}"',
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        data = hub._object_path(entry.sha256).read_bytes()
        status = 200
        rng = self.headers.get("Range")
        if rng and self.command == "GET":
            mr = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if mr:
                start = int(mr[1])
                end = int(mr[2]) if mr[2] else len(data) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start : end + 1], 206
        self._send(status, data, headers, content_type="application/octet-stream")


_T = r"(?P<type>models|datasets|spaces)"
_ROUTES = [
    ("GET", r"/api/whoami-v2", _Handler.whoami),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("GET", rf"/api/{_T}/(?P<repo>{_REPO_ID})/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", _Handler.tree),
    ("POST", rf"/api/{_T}/(?P<repo>{_REPO_ID})/paths-info/(?P<rev>[^/]+)", _Handler.paths_info),
    ("POST", rf"/api/{_T}/(?P<repo>{_REPO_ID})/preupload/(?P<rev>[^/]+)", _Handler.preupload),
    ("POST", rf"/api/{_T}/(?P<repo>{_REPO_ID})/commit/(?P<rev>[^/]+)", _Handler.commit),
    ("GET", rf"/api/{_T}/(?P<repo>{_REPO_ID})(?:/revision/(?P<rev>[^/]+))?", _Handler.repo_info),
    ("POST", rf"/(?:(?P<type>datasets|spaces)/)?(?P<repo>{_REPO_ID})\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    ("PUT", r"/__lfs/upload/(?P<oid>[0-9a-f]{64})", _Handler.lfs_upload),
    ("POST", r"/__lfs/verify/(?P<oid>[0-9a-f]{64})", _Handler.lfs_verify),
    ("GET", rf"/(?:(?P<type>datasets|spaces)/)?(?P<repo>{_REPO_ID})/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
]


@contextlib.contextmanager
def start_fake_hub(root: str | Path | None = None):
    """Run a `FakeHub` on 127.0.0.1 (ephemeral port) for the duration of the block; storage in `root` or a temp dir."""
    tmp = None
    if root is None:
        tmp = tempfile.mkdtemp(prefix="fake-hub-")
        root = tmp
    hub = FakeHub(root).start()
    try:
        yield hub
    finally:
        hub.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def fake_hub(tmp_path):
    """A running `FakeHub` (`.endpoint`, `.root`, `.client_env(hf_home)`), storing under the test's tmp_path."""
    with start_fake_hub(tmp_path / "fake-hub-storage") as hub:
        yield hub
