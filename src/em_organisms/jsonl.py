"""JSONL files that survive a crash: whole lines are appended and flushed, a reader drops (and
trims) a last line cut short by a kill instead of failing on it, and a rewrite is atomic."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from em_organisms.errors import EmOrganismsError

log = logging.getLogger(__name__)


class JsonlError(EmOrganismsError, ValueError):
    pass


class BadLine(EmOrganismsError, ValueError):
    """One line that is not a JSON value we can keep; the message says why, without the line
    (callers add the file and line number)."""

    def __init__(self, why: str, torn_if_last: bool = False) -> None:
        super().__init__(why)
        self.torn_if_last = torn_if_last  # a syntax error: on the last line, a cut-short write


# A \uD800-\uDFFF escape: half of a surrogate pair, or a lone one that no UTF-8 file can hold.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def parse_line(line: bytes, nan: bool = True) -> Any:
    """LINE as JSON, or BadLine: not JSON, a number longer than Python reads (4300 digits), a
    lone surrogate (\\ud800 alone: valid JSON, but not text any file can hold), nesting too
    deep, or NaN/Infinity where NAN is False."""
    try:
        text = line.decode("utf-8")  # not json's guess among UTF-8, -16 and -32
        value = json.loads(text) if nan else json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise BadLine(f"not JSON: {err.msg} (column {err.colno})", torn_if_last=True) from None
    except UnicodeDecodeError as err:
        raise BadLine(f"not UTF-8 ({err.reason} at byte {err.start})") from None
    except RecursionError:
        raise BadLine("nested too deeply to read") from None
    except ValueError as err:  # a 5000-digit number, NaN where refused
        raise BadLine(f"not JSON: {str(err).split(';')[0]}") from None
    if _SURROGATE_ESCAPE.search(line) and not _is_text(value):
        raise BadLine("holds a lone surrogate (an escape such as \\ud800 without its pair)")
    return value


def _refuse_constant(constant: str) -> float:
    raise ValueError(f"{constant} is not a JSON number")


def _is_text(value: Any) -> bool:
    """Whether every string in VALUE encodes as UTF-8 (a lone surrogate does not)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_is_text(k) and _is_text(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_text(v) for v in value)
    return True


def _line(row: dict[str, Any], path: Path) -> str:
    """One JSON line; a number that is not finite (NaN is not JSON) refuses the write."""
    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError:
        raise JsonlError(
            f"{path}: a row holds a number that is not finite (NaN or infinity); nothing written"
        ) from None


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(_line(row, path) for row in rows)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl_resumable(path: Path) -> list[dict[str, Any]]:
    """Rows of PATH (none when it does not exist); a torn last line is removed from the file."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(parse_line(line))
        except BadLine as err:
            if err.torn_if_last and number == len(lines):  # without its newline: cut by a crash
                log.warning("%s:%d: incomplete last line dropped (it will be redone)", path, number)
                with path.open("r+b") as handle:
                    handle.truncate(len(raw) - len(line))
                break
            raise JsonlError(f"{path}:{number}: {err}; the file is damaged") from None
    return rows


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file given as input: read, never modified. Unlike our own append-only
    outputs (`read_jsonl_resumable`), a torn or bad line here is an error naming file and line."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise JsonlError(f"{path}: cannot be read ({err.strerror or err})") from None
    lines = raw.split(b"\n")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = parse_line(line)
        except BadLine as err:
            torn = err.torn_if_last and number == len(lines)
            why = "incomplete last line (was the file cut short?)" if torn else str(err)
            raise JsonlError(f"{path}:{number}: {why}; the file was left as it is") from None
        if not isinstance(row, dict):
            raise JsonlError(f"{path}:{number}: a row is a JSON object, not {type(row).__name__}")
        rows.append(row)
    return rows


def write_jsonl(out: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as raw:
        # mtime=0: the same rows give the same bytes, so file hashes are reproducible.
        binary = (
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0)
            if out.suffix == ".gz"
            else raw
        )
        with io.TextIOWrapper(binary, encoding="utf-8") as handle:
            for row in rows:
                handle.write(_line(row, out))
    os.replace(tmp, out)


def write_atomic(path: Path, data: bytes) -> None:
    """The whole file or, after a crash, the old one: written beside it, then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))
