"""Push a staged folder to a Hub repo branch in one commit, idempotently.

Each staged folder carries a manifest (`em_organisms_release.json`) with the sha256 of every
other file. A push first reads the branch's manifest: equal means the branch already holds
exactly these files and nothing is sent (no commit). Otherwise one commit uploads the folder and
deletes whatever else the branch held, so the branch ends up equal to the folder. A push cut
short leaves the branch's old manifest in place, so the next run pushes again (LFS objects already
on the server are not sent twice). The token is huggingface_hub's own (HF_TOKEN or `hf auth
login`); nothing here prints or stores it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_organisms.artifacts import ReleaseManifest, read_artifact, write_artifact
from em_organisms.artifacts.names import MANIFEST as MANIFEST
from em_organisms.artifacts.store import ArtifactError

if TYPE_CHECKING:
    from huggingface_hub import HfApi


@dataclass(frozen=True)
class BranchPush:
    branch: str
    commit: str | None  # None: the branch already held these files, nothing was pushed
    files: int


def file_digests(folder: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name != MANIFEST:
            with path.open("rb") as stream:  # streamed: full-SFT weights are gigabytes
                digests[name] = hashlib.file_digest(stream, "sha256").hexdigest()
    return digests


def write_manifest(folder: Path, about: dict[str, Any]) -> dict[str, Any]:
    """Record every file's sha256 (plus ABOUT) in FOLDER's manifest; return it."""
    manifest = ReleaseManifest(**about, files=file_digests(folder))
    write_artifact(folder / MANIFEST, manifest)
    return manifest.model_dump(mode="json")


def remote_manifest(api: HfApi, repo_id: str, repo_type: str, branch: str) -> dict | None:
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    try:
        path = api.hf_hub_download(repo_id, MANIFEST, repo_type=repo_type, revision=branch)
    except (EntryNotFoundError, RevisionNotFoundError):
        return None
    try:
        return read_artifact(path, ReleaseManifest).model_dump(mode="json")
    except ArtifactError:  # an older release's manifest, or none of ours: push over it
        return None


def branch_exists(api: HfApi, repo_id: str, repo_type: str, branch: str) -> bool:
    refs = api.list_repo_refs(repo_id, repo_type=repo_type)
    return any(ref.name == branch for ref in refs.branches)


def push_folder(
    api: HfApi,
    repo_id: str,
    folder: Path,
    *,
    repo_type: str = "model",
    branch: str = "main",
    message: str,
) -> BranchPush:
    """Make BRANCH hold exactly FOLDER's files (FOLDER has a manifest), in at most one commit.
    A new branch other than main starts from the repo's first commit, so it holds nothing of
    main's files."""
    local = read_artifact(folder / MANIFEST, ReleaseManifest).model_dump(mode="json")
    exists = branch == "main" or branch_exists(api, repo_id, repo_type, branch)
    if exists and remote_manifest(api, repo_id, repo_type, branch) == local:
        return BranchPush(branch, None, len(local["files"]))
    if not exists:
        first = api.list_repo_commits(repo_id, repo_type=repo_type)[-1].commit_id
        api.create_branch(repo_id, branch=branch, revision=first, repo_type=repo_type)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type=repo_type,
        revision=branch,
        commit_message=message,
        delete_patterns=["*"],  # files of an earlier release that this one no longer has
    )
    return BranchPush(branch, info.oid, len(local["files"]))
