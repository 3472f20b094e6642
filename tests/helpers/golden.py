"""Golden files: rendered text compared byte for byte, rewritten only on request."""

from __future__ import annotations

from pathlib import Path

import pytest


def assert_matches_golden(rendered: str, golden: Path, what: str, regenerate: str) -> None:
    """RENDERED must equal the file GOLDEN; `UPDATE_GOLDEN=1` rewrites it. On a difference the
    failure shows the diff and REGENERATE, the command that rewrites the file."""
    import difflib
    import os

    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered, encoding="utf-8")
    expected = golden.read_text(encoding="utf-8") if golden.is_file() else ""
    if rendered != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                fromfile=str(golden),
                tofile="rendered",
            )
        )
        pytest.fail(
            f"{what} differs from {golden.name}:\n{diff}\n"
            f"If the change is intended, review it and regenerate the file with:\n  {regenerate}",
            pytrace=False,
        )
