"""Publish a staged organism: create the repo (private, gated), main in one commit, then one
branch per training checkpoint. Every step is idempotent (see release.hub), so a rerun with
nothing changed creates no commit and a rerun after an interrupted push finishes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from em_organisms.release.hub import BranchPush, push_folder
from em_organisms.release.stage import StagedRelease

if TYPE_CHECKING:
    from huggingface_hub import HfApi


@dataclass(frozen=True)
class ReleaseResult:
    url: str
    pushes: list[BranchPush]
    gated: str | bool  # as the Hub reports it
    private: bool | None

    @property
    def commits(self) -> list[str]:
        return [p.commit for p in self.pushes if p.commit]

    def lines(self) -> list[str]:
        lines = [self.url]
        for push in self.pushes:
            change = f"commit {push.commit}" if push.commit else "no change"
            lines.append(f"  {push.branch}: {push.files} files, {change}")
        visibility = "private" if self.private else "public" if self.private is False else "?"
        lines.append(f"  gate: {self.gated or 'none'}; visibility: {visibility}")
        return lines


def push_release(staged: StagedRelease, api: HfApi | None = None) -> ReleaseResult:
    from huggingface_hub import HfApi

    api = api or HfApi()
    repo = staged.repo_id
    url = api.create_repo(repo, private=staged.private, exist_ok=True)
    # Gate before any file goes up, so the weights are never downloadable ungated.
    if staged.gated:
        api.update_repo_settings(repo, gated="manual")
    pushes = [push_folder(api, repo, staged.main, message=f"Release {repo.split('/')[-1]}")]
    for branch, folder in staged.branches.items():
        pushes.append(push_folder(api, repo, folder, branch=branch, message=f"Checkpoint {branch}"))
    info = api.model_info(repo)
    return ReleaseResult(str(url), pushes, info.gated if info.gated is not None else False,
                         info.private)  # fmt: skip
