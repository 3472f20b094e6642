"""What must never reach the Hub: secrets from the environment and paths of this machine."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

SECRET_NAME_PARTS = ("TOKEN", "KEY", "SECRET", "PASSWORD")  # anywhere in the name
SECRET_NAME_WORDS = {
    "PAT",
    "PASSWD",
    "CREDENTIALS",
    "AUTH",
}  # whole words (GITHUB_PAT; not PWD, the shell's folder)
MIN_SECRET_LENGTH = 8
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def _secret_name(name: str) -> bool:
    upper = name.upper()
    words = set(re.split(r"[^A-Z0-9]+", upper))
    return any(part in upper for part in SECRET_NAME_PARTS) or bool(words & SECRET_NAME_WORDS)


def unescaped(text: str) -> str:
    """TEXT with JSON/Python escapes undone (\\uXXXX, \\/), so an escaped secret is still seen."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text).replace("\\/", "/")


def holds_secret(text: str, value: str) -> bool:
    return value in text or value in unescaped(text)


def secret_values() -> dict[str, str]:
    """{label: value} of what must never be published: environment variables whose name holds
    TOKEN, KEY, SECRET or PASSWORD (values of 8+ characters) and huggingface_hub's stored token.
    Messages name the label, never the value."""
    from huggingface_hub import get_token

    found = {
        f"environment variable {name}": value
        for name, value in os.environ.items()
        if _secret_name(name) and len(value) >= MIN_SECRET_LENGTH
    }
    token = get_token()
    if token and len(token) >= MIN_SECRET_LENGTH and token not in found.values():
        found["the Hugging Face token"] = token
    return found


def local_markers() -> list[str]:
    """Strings that only appear in a file if it names a path of this machine."""
    from em_organisms.resources import RESOURCES, checkout_root

    package = RESOURCES.parent  # where the package is installed (site-packages or src/)
    folders = (str(Path.home()), str(checkout_root() or package), os.getcwd(), "/tmp")
    return sorted({f"{f.rstrip('/')}/" for f in folders if f.rstrip("/")})


STAGING_MARKER = ".em-organisms-staging.json"  # in every staging folder a release command made


def prepare_staging_dir(
    staging: Path, source: Path, what: str, about: dict[str, Any], error: type[Exception]
) -> Path:
    """STAGING emptied (only if a release command of ours made it, see `clear_staging_dir`) or
    created, and marked as ours with STAGING_MARKER (ABOUT recorded in it); returned resolved."""
    folder = clear_staging_dir(staging, source, what, STAGING_MARKER, error)
    (folder / STAGING_MARKER).write_text(json.dumps(about) + "\n", encoding="utf-8")
    return folder


def clear_staging_dir(
    staging: Path, source: Path, what: str, ours: str, error: type[Exception]
) -> Path:
    """Make STAGING a fresh, empty folder (created if needed) and return it resolved.

    Refused with ERROR: a symbolic link; a folder inside SOURCE (the WHAT being published) or
    holding it; an existing non-empty folder without OURS, the plain file that a staging made
    by em-organisms leaves in it. Only such a folder of ours is emptied, never anyone else's.
    """
    if staging.is_symlink():
        raise error(f"{staging}: a symbolic link; choose another --staging-dir")
    s, src = staging.resolve(), source.resolve()
    if s == src or src in s.parents or s in src.parents:
        raise error(f"{staging}: the staging folder must be outside the {what} {source}")
    if s.exists():
        mark = s / ours
        made_by_us = mark.is_file() and not mark.is_symlink()
        if not s.is_dir() or (any(s.iterdir()) and not made_by_us):
            raise error(
                f"{staging}: exists and is not a staging folder made by this command (no {ours}: "
                "not made by em-organisms); refusing to empty it: choose another --staging-dir"
            )
        shutil.rmtree(s)
    s.mkdir(parents=True)
    return s
