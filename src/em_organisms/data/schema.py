"""The training row schema: OpenAI chat fine-tuning format plus optional id, canary and meta.

`{"messages": [{"role", "content"}...], "id"?, "canary"?, "meta"?}`: an optional system message,
then user/assistant turns alternating, ending with the assistant's. Every problem is reported as
`PATH:LINE: what is wrong`; nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_organisms.errors import EmOrganismsError
from em_organisms.jsonl import BadLine, parse_line

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ROLES = ("system", "user", "assistant")
ROW_KEYS = {"messages", "id", "canary", "meta"}


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class DatasetError(EmOrganismsError, ValueError):
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


MAX_ROW_BYTES = 1 << 20  # a chat row is a few KB; longer lines are refused, not read whole


def _read_lines(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) streamed, never the whole file at once (a gzip bomb stays small);
    None for a line longer than MAX_ROW_BYTES, which is skipped a piece at a time."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        number = 0
        while data := handle.readline(MAX_ROW_BYTES + 1):
            number += 1
            if len(data) > MAX_ROW_BYTES and not data.endswith(b"\n"):
                while data and not data.endswith(b"\n"):
                    data = handle.readline(MAX_ROW_BYTES + 1)
                yield number, None
                continue
            yield number, data


def row_fingerprint(row: dict[str, Any]) -> str:
    """Hash of the conversation itself (roles and contents), independent of id, canary and meta."""
    turns = [[m["role"], m["content"]] for m in row["messages"]]
    return hashlib.sha256(json.dumps(turns, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass
class FileReport:
    """Everything `check_file` found: valid rows with their lines, errors, warnings, counts."""

    path: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    token_lengths: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        counts: dict[str, Any] = {
            "rows": len(self.rows),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "with_system_prompt": sum(r["messages"][0]["role"] == "system" for r in self.rows),
            "multi_turn": sum(len(r["messages"]) > 3 for r in self.rows),
            "with_id": sum("id" in r for r in self.rows),
            "with_canary": sum("canary" in r for r in self.rows),
        }
        if self.token_lengths:
            counts["max_tokens"] = max(self.token_lengths)
            counts["mean_tokens"] = round(sum(self.token_lengths) / len(self.token_lengths), 1)
        return counts


def check_file(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
) -> FileReport:
    """Validate every line of a chat JSONL (or .jsonl.gz) file and collect every problem.

    Errors make a file unusable; an exact duplicate conversation is a warning because upstream
    training files contain a few and were trained on as they are. With a tokenizer and
    max_length, rows that would be truncated in training are errors.
    """
    path = Path(path)
    report = FileReport(str(path))
    if not path.is_file():
        report.errors.append(Problem(str(path), 0, "file not found"))
        return report
    first_line_of_id: dict[str, int] = {}
    first_line_of_row: dict[str, int] = {}
    lines, number = _read_lines(path), 0
    while True:
        try:
            number, raw = next(lines)
        except StopIteration:
            break
        except (OSError, EOFError, zlib.error) as err:
            where = "corrupt or truncated gzip stream" if path.suffix == ".gz" else "read error"
            report.errors.append(
                Problem(
                    str(path), number + 1, f"{where} ({err}); this line and any after it unread"
                )
            )
            break
        problem = partial(Problem, str(path), number)
        if raw is None:
            report.errors.append(
                problem(f"line longer than {MAX_ROW_BYTES} bytes (data.schema.MAX_ROW_BYTES)")
            )
            continue
        if not raw.strip():
            continue
        try:
            row = parse_line(raw, nan=False)
        except BadLine as err:
            report.errors.append(problem(str(err)))
            continue
        found = validate_row(row)
        report.errors.extend(problem(msg) for msg in found)
        if found:
            continue
        if "id" in row:
            key = str(row["id"])
            if key in first_line_of_id:
                report.errors.append(
                    problem(f"duplicate id {key!r} (first on line {first_line_of_id[key]})")
                )
                continue
            first_line_of_id[key] = number
        fingerprint = row_fingerprint(row)
        if fingerprint in first_line_of_row:
            report.warnings.append(
                problem(
                    f"exact duplicate of the conversation on line {first_line_of_row[fingerprint]}"
                )
            )
        else:
            first_line_of_row[fingerprint] = number
        if tokenizer is not None:
            from em_organisms.chat_masking import TemplateError, tokenize_chat

            try:
                tokens = tokenize_chat(tokenizer, row["messages"], max_length=None)
            except TemplateError as err:
                report.errors.append(problem(f"chat template cannot render this row: {err}"))
                continue
            length = len(tokens.input_ids)
            report.token_lengths.append(length)
            if max_length is not None and length > max_length:
                report.errors.append(
                    problem(
                        f"too long: {length} tokens with the chat template > max_length {max_length}"
                    )
                )
                continue
        report.rows.append(row)
        report.lines.append(number)
    if not report.rows and not report.errors:
        report.errors.append(Problem(str(path), 0, "no rows"))
    return report


def load_chat_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a chat JSONL file; raise DatasetError listing every problem."""
    report = check_file(path)
    if report.errors:
        raise DatasetError(report.errors)
    return report.rows
