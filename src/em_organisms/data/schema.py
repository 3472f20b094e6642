"""The training row schema: OpenAI chat fine-tuning format plus optional id, canary and meta.

`{"messages": [{"role", "content"}...], "id"?, "canary"?, "meta"?}`: an optional system message,
then user/assistant turns alternating, ending with the assistant's. Every problem is reported as
`PATH:LINE: what is wrong`; nothing is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")
ROW_KEYS = {"messages", "id", "canary", "meta"}


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class DatasetError(ValueError):
    """A dataset file has problems; `problems` lists each one with its file and line."""

    def __init__(self, problems: list[Problem], limit: int = 20) -> None:
        self.problems = problems
        shown = "\n".join(str(p) for p in problems[:limit])
        more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(f"{len(problems)} problem(s) in dataset:\n{shown}{more}")


def validate_row(row: Any) -> list[str]:
    """What is wrong with one parsed row (empty when it is valid)."""
    if not isinstance(row, dict):
        return [f"row is a JSON {type(row).__name__}, expected an object"]
    problems = [
        f"unknown key '{k}' (allowed: {', '.join(sorted(ROW_KEYS))})"
        for k in row
        if k not in ROW_KEYS
    ]
    if "id" in row and not isinstance(row["id"], str | int):
        problems.append("'id' must be a string or an integer")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "no 'messages' list (expected a non-empty list of {role, content})"]
    expected = "user"
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.append(f"{where} is not an object")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            problems.append(f"{where}: unknown role {role!r} (allowed: {', '.join(ROLES)})")
            continue
        if not isinstance(content, str) or not content.strip():
            problems.append(f"{where}: empty or missing 'content'")
        if role == "system" and i == 0:
            continue
        if role != expected:
            problems.append(f"{where}: expected a '{expected}' message here, got '{role}'")
            break
        expected = "assistant" if role == "user" else "user"
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") != "assistant":
        problems.append("no final assistant turn (the last message must be the assistant's)")
    return problems


def load_chat_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a chat JSONL file; raise DatasetError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError([Problem(str(path), 0, "file not found")])
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problems.append(
                    Problem(str(path), number, f"not UTF-8 ({err.reason} at byte {err.start})")
                )
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                problems.append(
                    Problem(str(path), number, f"not JSON: {err.msg} (column {err.colno})")
                )
                continue
            found = validate_row(row)
            problems.extend(Problem(str(path), number, msg) for msg in found)
            if not found:
                rows.append(row)
    if problems:
        raise DatasetError(problems)
    if not rows:
        raise DatasetError([Problem(str(path), 0, "no rows")])
    return rows
