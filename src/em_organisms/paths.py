"""Where trained organisms live: one rule for writing and reading them.

A recipe's organism is `RUNS_DIR/ORGANISM_ID`, where RUNS_DIR is `$EM_ORGANISMS_RUNS_DIR` (or
`em-organisms --runs-dir DIR ...`, which sets it), else `runs/` under the current directory.
`train` writes there and `sample`, `eval`, `release`, `phase` and the arena read there, so a
recipe trained from one directory is found from the same one. What else a command writes by
default lives under RUNS_DIR too: `staging/` (releases staged before a push), `calibration/`,
`judges/` (distilled students).
"""

from __future__ import annotations

import os
from pathlib import Path

from em_organisms.errors import EmOrganismsError

RUNS_ENV = "EM_ORGANISMS_RUNS_DIR"


def runs_dir() -> Path:
    return Path(os.environ.get(RUNS_ENV) or "runs")


def organism_dir(organism_id: str) -> Path:
    return runs_dir() / organism_id


class OutputPathError(EmOrganismsError, ValueError):
    """An output path that cannot be written as asked (found before any work starts)."""


def _blocked_by_file(path: Path) -> Path | None:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent if not parent.is_dir() else None
    return None


def check_output_file(path: Path, flag: str = "--out") -> Path:
    """PATH can become a file: not a folder, no file where a folder of it must be, writable."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{flag} {path}: a folder; name a file inside it")
    blocker = _blocked_by_file(path.parent)
    if blocker is not None:
        raise OutputPathError(
            f"{flag} {path}: {blocker} is a file, not a folder; choose another path"
        )
    existing = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        raise OutputPathError(f"{flag} {path}: {existing} is not writable; choose another path")
    return path


def check_output_dir(path: Path, flag: str = "--out") -> Path:
    """PATH can be (or is) a folder we write into."""
    path = Path(path)
    blocker = _blocked_by_file(path)
    if blocker is not None:
        raise OutputPathError(
            f"{flag} {path}: {blocker} is a file, not a folder; choose another path"
        )
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        raise OutputPathError(f"{flag} {path}: {existing} is not writable; choose another path")
    return path
