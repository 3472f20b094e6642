"""Pushing a staged arena Space: to its main branch in one commit, or none when nothing changed
(`release/hub.py`). Private unless asked otherwise; the token is huggingface_hub's own (HF_TOKEN
or `hf auth login`) and is never printed.
"""

from __future__ import annotations

from dataclasses import dataclass

from em_organisms.hub_ids import HUB_ID
from em_organisms.release.hub import BranchPush, push_folder
from em_organisms.release.space_card import SpaceError
from em_organisms.release.space_stage import StagedSpace


@dataclass(frozen=True)
class SpacePush:
    url: str
    push: BranchPush
    private: bool | None


def push_space(
    staged: StagedSpace, repo_id: str, *, private: bool = True, token: str | None = None
) -> SpacePush:
    """Create the Space REPO_ID if needed (private unless told otherwise; an existing Space keeps
    its visibility) and make its main branch hold exactly the staged files."""
    from huggingface_hub import HfApi

    if not HUB_ID.match(repo_id):
        raise SpaceError(f"{repo_id!r} is not a Hub id of the form org/name")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    models = ", ".join(staged.manifest.get("models", []))
    result = push_folder(
        api, repo_id, staged.folder, repo_type="space", message=f"Arena Space: {models}"
    )
    return SpacePush(f"{api.endpoint}/spaces/{repo_id}", result, api.space_info(repo_id).private)
