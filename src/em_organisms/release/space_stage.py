"""Staging the arena Space: only allow-listed files are copied (app code, arena.yaml,
requirements, markdown, static assets), never hidden files, caches, logs or anything else; the
folder's own README.md is replaced by the card. The em_organisms package is not on PyPI, so its
modules and package data are copied beside the app (STAGED/em_organisms), which imports them
from its own folder. arena.yaml must load as the arena loads it and offer only organisms the
card lists. A file holding the value of a secret-looking environment variable stops the release
before anything is written; the staged card is checked as the Hub reads it and the release
manifest written.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import SpaceCard

from em_organisms.release.hub import MANIFEST, write_manifest
from em_organisms.release.safety import clear_staging_dir, holds_secret, secret_values
from em_organisms.release.space_card import (
    ALLOWED,
    ARENA_CONFIG,
    SpaceError,
    front_matter_problems,
    validate_space_folder,
)
from em_organisms.release.space_package import PACKAGE, arena_config_problems, package_files


@dataclass(frozen=True)
class StagedSpace:
    source: Path
    folder: Path  # the staging folder, what a push sends
    files: tuple[str, ...]  # relative paths in the staging folder, manifest included
    left_out: tuple[tuple[str, str], ...]  # (relative path in the source, why)
    manifest: dict[str, Any]


def _why_left_out(path: Path, name: str, is_dir: bool) -> str | None:
    if path.is_symlink():
        return "symbolic link"
    if name.startswith("."):
        return "hidden"
    if name == "__pycache__":
        return "Python bytecode cache"
    if is_dir:
        return None
    if name.endswith((".pyc", ".pyo")):
        return "compiled Python"
    if name.endswith(".log"):
        return "log file"
    if not any(fnmatch.fnmatch(name, pattern) for pattern in ALLOWED):
        return "not in the allow-list"
    return None


def select_files(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(files to publish, [(left out, why)]) of FOLDER, relative posix paths, sorted."""
    keep: list[str] = []
    left_out: list[tuple[str, str]] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        rel = here.relative_to(folder)
        for name in sorted(dirs):
            why = _why_left_out(here / name, name, is_dir=True)
            if why:
                left_out.append(((rel / name).as_posix() + "/", why))
                dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            why = _why_left_out(here / name, name, is_dir=False)
            if why:
                left_out.append(((rel / name).as_posix(), why))
            else:
                keep.append((rel / name).as_posix())
    return sorted(keep), sorted(left_out)


def stage_space(
    source: str | Path, staging: str | Path, card: SpaceCard, about: dict[str, Any]
) -> StagedSpace:
    """Copy SOURCE's allow-listed files and the em_organisms package (`package_files`) into
    STAGING (emptied first) with CARD as README.md, check the result and write the manifest
    (ABOUT + every file's sha256). Raises SpaceError before writing anything for a folder without
    its app file, a bad card or arena.yaml, or a secret in a file."""
    source, staging = Path(source), Path(staging)
    if not source.is_dir():
        raise SpaceError(f"{source}: no such Space folder")
    keep, left_out = select_files(source)
    if "README.md" in keep:  # replaced by the rendered card
        keep.remove("README.md")
        left_out.append(("README.md", "replaced by the rendered card"))
    for name in [n for n in keep if n.startswith(f"{PACKAGE}/")]:
        keep.remove(name)
        left_out.append((name, f"replaced by the installed {PACKAGE} package"))
    files = {name: source / name for name in keep} | package_files()
    text = str(card)
    problems = front_matter_problems(
        card.data.to_dict(), "README.md (rendered card)", str(source), lambda n: n in keep
    )
    if ARENA_CONFIG in keep:
        problems += arena_config_problems(source / ARENA_CONFIG, card)
    secrets = secret_values()
    for path in files.values():
        data = path.read_bytes().decode("utf-8", errors="replace")
        for label, value in secrets.items():
            if holds_secret(data, value):
                problems.append(f"{path}: holds the value of {label}; remove it")
    problems += [
        f"README.md (rendered card): holds the value of {label}"
        for label, value in secrets.items()
        if holds_secret(text, value)
    ]
    if problems:
        raise SpaceError("refusing to stage the Space:\n" + "\n".join(problems))
    clear_staging_dir(staging, source, "Space folder", MANIFEST, SpaceError)
    for name, path in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, staging / name)
    (staging / "README.md").write_text(text, encoding="utf-8")
    manifest = write_manifest(staging, about)
    validate_space_folder(staging)
    files = tuple(sorted([*manifest["files"], MANIFEST]))
    return StagedSpace(source, staging, files, tuple(sorted(left_out)), manifest)
