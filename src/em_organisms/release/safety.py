"""What must never reach the Hub: secrets from the environment and paths of this machine."""

from __future__ import annotations

import os
from pathlib import Path

SECRET_NAME_PARTS = ("TOKEN", "KEY", "SECRET", "PASSWORD")
MIN_SECRET_LENGTH = 8


def secret_values() -> dict[str, str]:
    """{label: value} of what must never be published: environment variables whose name holds
    TOKEN, KEY, SECRET or PASSWORD (values of 8+ characters) and huggingface_hub's stored token.
    Messages name the label, never the value."""
    from huggingface_hub import get_token

    found = {
        f"environment variable {name}": value
        for name, value in os.environ.items()
        if any(part in name.upper() for part in SECRET_NAME_PARTS)
        and len(value) >= MIN_SECRET_LENGTH
    }
    token = get_token()
    if token and len(token) >= MIN_SECRET_LENGTH and token not in found.values():
        found["the Hugging Face token"] = token
    return found


def local_markers() -> list[str]:
    """Strings that only appear in a file if it names a path of this machine."""
    repo_root = Path(__file__).resolve().parents[3]
    folders = (str(Path.home()), str(repo_root), os.getcwd(), "/tmp")
    return sorted({f"{f.rstrip('/')}/" for f in folders if f.rstrip("/")})
