"""Write front-end of the local Hugging Face Hub test server (spec: shared/docs/hub-protocol.md).

olah, in offline mode, serves git repositories from its mirrors folder as Hub repos but has no
write routes. This app implements the push half of the Hub API (repo create/delete/settings,
validate-yaml, preupload, LFS batch + PUT, ndjson commits, branches, commit listing), stores
every push as a real git commit under ``MIRRORS/{models|datasets|spaces}/{namespace}/{name}``
(LFS objects in ``.git/lfs/objects/aa/bb/oid``, where olah reads them) and reverse-proxies every
other request to olah. On the way it resolves branch names to commit shas (olah answers 401 for
a missing file at a branch name, and for repo info without ``/revision``), answers missing
files with 404 + ``X-Error-Code: EntryNotFound``, serves byte ranges and overlays the stored
settings (private, gated, sdk) on repo info.

Run: ``python frontend.py --port P --mirrors DIR --olah http://127.0.0.1:Q [--token T]``.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import httpx
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

PLURAL = {"model": "models", "dataset": "datasets", "space": "spaces"}
URL_PREFIX = {"models": "", "datasets": "datasets/", "spaces": "spaces/"}
USER = "local-user"
_LFS_GLOBS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gguf *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model "
    "*.msgpack *.npy *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar "
    "*.safetensors *.tar.* *.tar *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
)
LFS_PATTERNS = _LFS_GLOBS.split()  # the Hub's default .gitattributes
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
POINTER = re.compile(rb"version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\n")
LFS_THRESHOLD = 10 * 1024 * 1024
DATE = "%Y-%m-%dT%H:%M:%S.000Z"  # the Hub's date format, which huggingface_hub parses
GIT_ENV = {
    "GIT_AUTHOR_NAME": USER,
    "GIT_AUTHOR_EMAIL": f"{USER}@localhost",
    "GIT_COMMITTER_NAME": USER,
    "GIT_COMMITTER_EMAIL": f"{USER}@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
ID = r"(?P<plural>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
REPO_INFO = re.compile(rf"^/api/{ID}/?$")
API_REV = re.compile(
    rf"^/api/{ID}/(?P<kind>revision|tree|paths-info)/(?P<rev>[^/]+)(?P<rest>/.*)?$"
)
RESOLVE = re.compile(
    r"^/(?:(?P<prefix>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)"
    r"/resolve/(?P<rev>[^/]+)(?P<rest>/.+)$"
)
# Not forwarded either way (uvicorn writes its own date and server).
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "date", "server"}


class HubError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        headers = {"X-Error-Code": self.code, "X-Error-Message": self.message}
        return JSONResponse({"error": self.message}, self.status, headers=headers)


def repo_not_found() -> HubError:
    return HubError(404, "RepoNotFound", "Repository not found")


def pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or "\n" in path or {"", ".", "..", ".git"} & set(parts):
        raise HubError(400, "BadRequest", f"Invalid path in repo: {path!r}")
    return path


class Store:
    """Hub repos as git repositories under ``mirrors/{models|datasets|spaces}/{ns}/{name}``."""

    def __init__(self, mirrors: Path) -> None:
        self.mirrors = mirrors
        self._locks: dict[Path, AbstractContextManager[Any]] = {}
        self._guard = threading.Lock()

    def path(self, plural: str, ns: str, name: str) -> Path:
        names_ok = all(re.fullmatch(r"[\w.\-]+", n) and ".." not in n for n in (ns, name))
        if plural not in URL_PREFIX or not names_ok:
            raise repo_not_found()
        return self.mirrors / plural / ns / name

    def repo(self, plural: str, ns: str, name: str) -> Path:
        path = self.path(plural, ns, name)
        if not (path / ".git").is_dir():
            raise repo_not_found()
        return path

    def lock(self, repo: Path) -> AbstractContextManager[Any]:
        with self._guard:
            return self._locks.setdefault(repo, threading.RLock())

    def git_bytes(self, repo: Path, *args: str, stdin: bytes | None = None, **env: str) -> bytes:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=stdin,
            capture_output=True,
            env={**os.environ, **GIT_ENV, **env},
        )
        if proc.returncode != 0:
            raise HubError(500, "GitError", f"git {args[0]}: {proc.stderr.decode().strip()}")
        return proc.stdout

    def git(self, repo: Path, *args: str, stdin: bytes | None = None, **env: str) -> str:
        return self.git_bytes(repo, *args, stdin=stdin, **env).decode().strip()

    def blob(self, repo: Path, data: bytes) -> str:
        return self.git(repo, "hash-object", "-w", "--stdin", stdin=data)

    def resolve(self, repo: Path, rev: str) -> str | None:
        if rev.startswith("-") or not re.fullmatch(r"[\w.\-/]+", rev):
            return None
        try:
            return self.git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        except HubError:
            return None

    def branch_head(self, repo: Path, branch: str) -> str:
        sha = self.resolve(repo, f"refs/heads/{branch}")
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        return sha

    def lfs_object(self, repo: Path, oid: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", oid):
            raise HubError(400, "BadRequest", f"Invalid LFS oid {oid!r}")
        return repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid

    def entries(self, repo: Path, sha: str) -> dict[str, tuple[str, str, int]]:
        """path -> (mode, blob sha, size) of every file at commit ``sha``."""
        out = self.git(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", sha)
        entries = {}
        for line in filter(None, out.split("\0")):
            meta, path = line.split("\t", 1)
            mode, _, blob, size = meta.split()
            entries[path] = (mode, blob, int(size))
        return entries

    def lfs_oid(self, repo: Path, blob: str, size: int) -> str | None:
        if not 100 < size < 200:
            return None
        match = POINTER.match(self.git_bytes(repo, "cat-file", "blob", blob))
        return match.group(1).decode() if match else None

    def settings_file(self, repo: Path) -> Path:
        return repo / ".git" / "hub-settings.json"

    def settings(self, repo: Path) -> dict[str, Any]:
        return json.loads(self.settings_file(repo).read_text())

    def update_settings(self, repo: Path, **changes: Any) -> None:
        with self.lock(repo):
            self.settings_file(repo).write_text(json.dumps({**self.settings(repo), **changes}))

    def create(self, plural: str, ns: str, name: str, private: bool, sdk: str | None) -> bool:
        """Create the repo with the Hub's initial commit; False if it exists already."""
        path = self.path(plural, ns, name)
        with self.lock(path):
            if (path / ".git").is_dir():
                return False
            path.mkdir(parents=True, exist_ok=True)
            self.git(path, "init", "-q", "-b", "main")
            settings = {"private": private, "gated": False, "sdk": sdk}
            self.settings_file(path).write_text(json.dumps(settings))
            files = [{"path": ".gitattributes", "content": GITATTRIBUTES}]
            if plural == "spaces":
                readme = f"---\ntitle: {name}\nsdk: {sdk}\n---\n"
                files.append({"path": "README.md", "content": readme})
            self.commit(
                path, "main", "initial commit", "", [("file", f) for f in files], initial=True
            )
            return True

    def commit(
        self,
        repo: Path,
        branch: str,
        summary: str,
        description: str,
        ops: list[tuple[str, dict[str, Any]]],
        parent_commit: str | None = None,
        initial: bool = False,
    ) -> str:
        """Apply ``ops`` (ndjson keys/values) on top of ``branch``; return the new head sha.

        A commit that changes nothing is not written: the current head is returned."""
        with self.lock(repo):
            parent = None if initial else self.branch_head(repo, branch)
            if parent_commit and parent_commit != parent:
                raise HubError(412, "PreconditionFailed", "A commit has happened since")
            files = {} if parent is None else self.entries(repo, parent)
            for key, value in ops:
                path = check_path(str(value.get("path", "")).strip("/"))
                if key == "file":
                    data = value["content"].encode()
                    if value.get("encoding") == "base64":
                        data = base64.b64decode(data)
                    files[path] = ("100644", self.blob(repo, data), 0)
                elif key == "lfsFile":
                    obj = self.lfs_object(repo, value["oid"])
                    if not obj.is_file():
                        raise HubError(
                            422, "BadRequest", f"LFS object {value['oid']} was not uploaded"
                        )
                    data = pointer(value["oid"], obj.stat().st_size)
                    files[path] = ("100644", self.blob(repo, data), 0)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, "EntryNotFound", "A file with this name doesn't exist")
                elif key == "deletedFolder":
                    files = {p: e for p, e in files.items() if not p.startswith(path + "/")}
                else:
                    raise HubError(400, "BadRequest", f"Unsupported commit operation {key!r}")
            with tempfile.TemporaryDirectory() as tmp:
                index = str(Path(tmp) / "index")
                info = "".join(f"{m} {b}\t{p}\n" for p, (m, b, _) in sorted(files.items()))
                self.git(
                    repo, "update-index", "--index-info", stdin=info.encode(), GIT_INDEX_FILE=index
                )
                tree = self.git(repo, "write-tree", GIT_INDEX_FILE=index)
            if parent is not None and tree == self.git(repo, "rev-parse", f"{parent}^{{tree}}"):
                return parent
            message = f"{summary}\n\n{description}" if description else summary
            args = ["commit-tree", tree] + (["-p", parent] if parent else [])
            sha = self.git(repo, *args, stdin=message.encode())
            self.git(repo, "update-ref", f"refs/heads/{branch}", sha, parent or "")
            return sha


def create_app(mirrors: Path, olah_url: str, token: str | None = None) -> FastAPI:
    store = Store(mirrors)
    app = FastAPI(title="local-hub front-end")
    client = httpx.AsyncClient(base_url=olah_url, timeout=60, trust_env=False)

    @app.exception_handler(HubError)
    async def hub_error(_: Request, exc: HubError) -> JSONResponse:
        return exc.response()

    def authorize(request: Request) -> None:
        if token is not None and request.headers.get("authorization") != f"Bearer {token}":
            raise HubError(401, "Unauthorized", "Invalid credentials in Authorization header")

    def url(request: Request, path: str) -> str:
        return f"{str(request.base_url).rstrip('/')}/{path}"

    @app.get("/_local_hub/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/api/whoami-v2")
    def whoami() -> dict[str, Any]:
        access = {"displayName": "local", "role": "write"}
        return {
            "type": "user",
            "name": USER,
            "fullname": USER,
            "orgs": [],
            "auth": {"accessToken": access},
        }

    @app.post("/api/repos/create")
    def create_repo(body: dict[str, Any], request: Request) -> JSONResponse:
        authorize(request)
        plural = PLURAL.get(body.get("type") or "model", "")
        if plural not in URL_PREFIX:
            raise HubError(400, "BadRequest", f"Invalid repo type {body.get('type')!r}")
        ns, name = body.get("organization") or USER, str(body.get("name", ""))
        private = body.get("visibility", "private" if body.get("private") else "public") != "public"
        created = store.create(plural, ns, name, private, body.get("sdk"))
        content = {"url": url(request, f"{URL_PREFIX[plural]}{ns}/{name}"), "name": f"{ns}/{name}"}
        if not created:
            content["error"] = "You already created this repo"
        return JSONResponse(content, 200 if created else 409)

    @app.delete("/api/repos/delete")
    def delete_repo(body: dict[str, Any], request: Request) -> dict[str, Any]:
        authorize(request)
        plural = PLURAL.get(body.get("type") or "model", "")
        shutil.rmtree(store.repo(plural, body.get("organization") or USER, str(body.get("name"))))
        return {}

    @app.put("/api/{plural}/{ns}/{name}/settings")
    def settings(plural: str, ns: str, name: str, body: dict[str, Any], request: Request) -> dict:
        authorize(request)
        repo, changes = store.repo(plural, ns, name), {}
        if "gated" in body:
            if body["gated"] not in (False, "auto", "manual"):
                raise HubError(400, "BadRequest", f"Invalid gated value {body['gated']!r}")
            changes["gated"] = body["gated"]
        if "visibility" in body or "private" in body:
            changes["private"] = (
                body.get("visibility", "private" if body.get("private") else "public") != "public"
            )
        store.update_settings(repo, **changes)
        return {}

    @app.post("/api/validate-yaml")
    def validate_yaml(body: dict[str, Any]) -> JSONResponse:
        match = re.match(r"^\s*---\r?\n(.*?)\r?\n---", body.get("content", ""), flags=re.S)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as exc:
            return JSONResponse({"errors": [{"message": f"Invalid YAML: {exc}"}]}, 400)
        if meta is not None and not isinstance(meta, dict):
            return JSONResponse({"errors": [{"message": "Metadata must be a mapping"}]}, 400)
        return JSONResponse({})

    @app.post("/api/{plural}/{ns}/{name}/preupload/{rev:path}")
    def preupload(plural: str, ns: str, name: str, rev: str, body: dict, request: Request) -> dict:
        authorize(request)
        repo = store.repo(plural, ns, name)
        files = store.entries(repo, store.branch_head(repo, rev))
        lfs_globs = LFS_PATTERNS
        if ".gitattributes" in files:
            text = store.git(repo, "cat-file", "blob", files[".gitattributes"][1])
            lfs_globs = [line.split()[0] for line in text.splitlines() if "filter=lfs" in line]
        out = []
        for item in body.get("files", []):
            path, oid, lfs = item["path"], None, False
            if path in files:
                _, blob, size = files[path]
                lfs_oid = store.lfs_oid(repo, blob, size)
                oid, lfs = lfs_oid or blob, lfs_oid is not None
            target = path if any("/" in g for g in lfs_globs) else path.rsplit("/", 1)[-1]
            lfs = lfs or any(
                fnmatch.fnmatch(target, g) or fnmatch.fnmatch(path, g) for g in lfs_globs
            )
            lfs = lfs or item.get("size", 0) >= LFS_THRESHOLD
            lfs = lfs or b"\0" in base64.b64decode(item.get("sample", ""))
            mode = "lfs" if lfs else "regular"
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return {"files": out}

    @app.post("/{prefix:path}.git/info/lfs/objects/batch")
    async def lfs_batch(prefix: str, request: Request) -> JSONResponse:
        authorize(request)
        parts = prefix.split("/")
        plural = parts.pop(0) if len(parts) == 3 else "models"
        if len(parts) != 2:
            raise repo_not_found()
        repo = store.repo(plural, *parts)
        body = await request.json()
        objects = []
        for obj in body.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not store.lfs_object(repo, obj["oid"]).is_file():
                href = url(request, f"_local_hub/lfs/{plural}/{'/'.join(parts)}/{obj['oid']}")
                entry["actions"] = {"upload": {"href": href, "expires_in": 3600}}
            objects.append(entry)
        return JSONResponse(
            {"transfer": "basic", "objects": objects}, media_type="application/vnd.git-lfs+json"
        )

    @app.put("/_local_hub/lfs/{plural}/{ns}/{name}/{oid}")
    async def lfs_upload(plural: str, ns: str, name: str, oid: str, request: Request) -> dict:
        target = store.lfs_object(store.repo(plural, ns, name), oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            async for chunk in request.stream():
                digest.update(chunk)
                tmp.write(chunk)
        if digest.hexdigest() != oid:
            os.unlink(tmp.name)
            raise HubError(400, "BadRequest", "LFS upload does not match its sha256")
        os.replace(tmp.name, target)
        return {}

    @app.post("/api/{plural}/{ns}/{name}/commit/{rev:path}")
    async def commit(plural: str, ns: str, name: str, rev: str, request: Request) -> dict:
        authorize(request)
        if request.query_params.get("create_pr") in ("1", "true"):
            raise HubError(
                501, "NotImplemented", "Pull requests are not supported by the local hub"
            )
        repo = store.repo(plural, ns, name)
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        ops = [(item["key"], item["value"]) for item in lines if item["key"] != "header"]
        sha = await run_in_threadpool(
            store.commit, repo, rev, header.get("summary", ""), header.get("description", ""),
            ops, header.get("parentCommit"),
        )  # fmt: skip
        commit_url = url(request, f"{URL_PREFIX[plural]}{ns}/{name}/commit/{sha}")
        return {"commitUrl": commit_url, "commitOid": sha, "pullRequestUrl": None}

    @app.post("/api/{plural}/{ns}/{name}/branch/{branch:path}")
    def create_branch(
        plural: str, ns: str, name: str, branch: str, request: Request, body: dict | None = None
    ) -> dict:
        authorize(request)
        repo = store.repo(plural, ns, name)
        start = store.resolve(repo, (body or {}).get("startingPoint") or "main")
        if start is None or store.resolve(repo, f"refs/heads/{branch}") is not None:
            raise HubError(409 if start else 404, "BadRequest", f"Cannot create branch {branch}")
        store.git(repo, "check-ref-format", f"refs/heads/{branch}")
        store.git(repo, "update-ref", f"refs/heads/{branch}", start, "")
        return {}

    @app.delete("/api/{plural}/{ns}/{name}/branch/{branch:path}")
    def delete_branch(plural: str, ns: str, name: str, branch: str, request: Request) -> dict:
        authorize(request)
        repo = store.repo(plural, ns, name)
        if branch == "main":
            raise HubError(403, "Forbidden", "Cannot delete the main branch")
        store.git(repo, "update-ref", "-d", f"refs/heads/{branch}", store.branch_head(repo, branch))
        return {}

    @app.get("/api/{plural}/{ns}/{name}/commits/{rev:path}")
    def list_commits(plural: str, ns: str, name: str, rev: str) -> list[dict[str, Any]]:
        repo = store.repo(plural, ns, name)
        sha = store.resolve(repo, rev)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        log = store.git(
            repo,
            "log",
            f"--date=format-local:{DATE}",
            "--format=%H%x1f%s%x1f%b%x1f%cd%x1e",
            sha,
            TZ="UTC",
        )
        commits = []
        for record in filter(None, (r.strip() for r in log.split("\x1e"))):
            sha, title, message, date = record.split("\x1f")
            authors = [{"user": USER, "avatar": None}]
            commits.append(
                {
                    "id": sha,
                    "title": title,
                    "message": message.strip(),
                    "date": date,
                    "authors": authors,
                }
            )
        return commits

    @app.api_route("/{full_path:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"])
    async def proxy(full_path: str, request: Request) -> Response:
        path = request.scope["raw_path"].decode()
        repo, kind, sha, info = None, None, None, REPO_INFO.match(path)
        if info:
            path = f"/api/{info['plural']}/{info['ns']}/{info['name']}/revision/main"
        if match := API_REV.match(path) or RESOLVE.match(path):
            groups = match.groupdict()
            plural = groups.get("plural") or groups.get("prefix") or "models"
            kind = groups.get("kind", "resolve")
            repo = store.repo(plural, groups["ns"], groups["name"])
            rev = unquote(groups["rev"])
            sha = await run_in_threadpool(store.resolve, repo, rev)
            if sha is None:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            file = unquote(groups["rest"] or "/")[1:]
            if kind == "resolve" and await run_in_threadpool(_blob_missing, store, repo, sha, file):
                raise HubError(404, "EntryNotFound", f"{file} does not exist on {rev!r}")
            rest = groups["rest"] or ("/" if kind == "tree" else "")
            path = path[: match.start("rev")] + sha + rest
        query = request.url.query
        # olah's expand=true looks up last commits on HEAD's history only (a 500 for a file that
        # only a branch has): ask it without expand and add lastCommit from git here.
        expand = kind == "tree" and request.query_params.get("expand", "").lower() in ("1", "true")
        if expand:
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "expand"]
            query = urlencode(params)
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS | {"range"}
        }
        upstream = client.build_request(
            request.method,
            path + (f"?{query}" if query else ""),
            headers=headers,
            content=await request.body(),
        )
        response = await client.send(upstream, stream=True)
        out_headers = {k: v for k, v in response.headers.items() if k.lower() not in HOP_HEADERS}
        if (
            kind == "revision"
            and request.method == "GET"
            and response.status_code == 200
            and repo is not None
        ):
            meta = json.loads(await response.aread())
            await response.aclose()
            settings = store.settings(repo)
            meta.update(private=settings["private"], gated=settings["gated"])
            if settings.get("sdk"):
                meta["sdk"] = settings["sdk"]
            return JSONResponse(meta)
        if expand and response.status_code == 200 and repo is not None and sha is not None:
            items = json.loads(await response.aread())
            await response.aclose()
            for item in items:
                item["lastCommit"] = await run_in_threadpool(
                    _last_commit, store, repo, sha, item["path"]
                )
            return JSONResponse(items)
        byte_range = request.headers.get("range")
        if (
            kind == "resolve"
            and request.method == "GET"
            and byte_range
            and response.status_code == 200
        ):
            data = await response.aread()
            await response.aclose()
            return _range_response(data, byte_range)
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            headers=out_headers,
            background=BackgroundTask(response.aclose),
        )

    return app


def _last_commit(store: Store, repo: Path, sha: str, path: str) -> dict[str, str]:
    fmt, date = "--format=%H%x1f%s%x1f%cd", f"--date=format-local:{DATE}"
    log = store.git(repo, "log", "-1", date, fmt, sha, "--", path, TZ="UTC")
    commit, title, date = log.split("\x1f")
    return {"id": commit, "title": title, "date": date}


def _blob_missing(store: Store, repo: Path, sha: str, file: str) -> bool:
    try:
        return store.git(repo, "cat-file", "-t", f"{sha}:{file}") != "blob"
    except HubError:
        return True


def _range_response(data: bytes, byte_range: str) -> Response:
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", byte_range.strip())
    if not match or not (match[1] or match[2]):
        return Response(data)
    if match[1]:
        start, end = int(match[1]), min(int(match[2] or len(data) - 1), len(data) - 1)
    else:
        start, end = max(len(data) - int(match[2]), 0), len(data) - 1
    if start >= len(data) or start > end:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{len(data)}"})
    headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"}
    return Response(data[start : end + 1], status_code=206, headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mirrors", type=Path, required=True)
    parser.add_argument("--olah", required=True, help="olah's base URL")
    parser.add_argument("--token", default=None, help="token that write requests must carry")
    args = parser.parse_args()
    app = create_app(args.mirrors, args.olah, args.token)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
