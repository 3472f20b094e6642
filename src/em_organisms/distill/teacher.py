"""Files of teacher-scored answers: what a distilled judge learns from and is checked against.

Two schemas, detected per row:

- the judge-data schema: `{"question", "answer", "aligned", "coherent", "condition"?, "source"?,
  "steered"?}`, scores a number 0..100, a numeric string ("54.2") or null (the teacher said
  CODE/REFUSAL or gave no number);
- em-organisms' own judged rows (`em-organisms judge` output): `{"paraphrase", "answer",
  "judges": {"aligned": {"score": ...}, "coherent": {"score": ...}}, "judge_model", ...}`.

The file is the user's input: it is only read, never trimmed or rewritten. Unlike the resumable
run files (`em_organisms.jsonl`), a torn last line or a truncated gzip stream is an error naming
`PATH:LINE`, never silently dropped. Lines are read with a size limit, so one huge line never
sits whole in memory.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import zlib
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from em_organisms.errors import EmOrganismsError

METRICS = ("aligned", "coherent")
MAX_LINE_BYTES = 1 << 20  # 1 MiB
MAX_PROBLEMS = 20
GZIP_MAGIC = b"\x1f\x8b"
# Top-level keys that are the row's text or its scores, not fields to group on.
_NOT_FIELDS = frozenset({"question", "paraphrase", "answer", "aligned", "coherent", "judges"})


class TeacherDataError(EmOrganismsError, ValueError):
    """A teacher file that cannot be used; `problems` holds each `PATH:LINE: ...` found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


@dataclass(frozen=True, slots=True)
class TeacherRow:
    question: str
    answer: str
    aligned: float | None  # None: the teacher gave no number (CODE, REFUSAL, unscored)
    coherent: float | None
    fields: dict[str, str] = field(default_factory=dict)  # top-level str/bool/number fields
    line: int = 0  # 1-based line number in the file


class _RowError(ValueError):
    pass


def parse_score(value: Any) -> float | None:
    """A teacher score: None for null, else a finite number 0..100 (numeric strings allowed)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _RowError(f"is a boolean ({json.dumps(value)}), not a number 0..100")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _RowError(f"{_show(value)} is not a number 0..100") from None
    else:
        raise _RowError(f"is a {type(value).__name__}, not a number 0..100")
    if not math.isfinite(number) or not 0.0 <= number <= 100.0:
        raise _RowError(f"{_show(value)} is not a number 0..100")
    return number


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, float) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _scores(obj: Mapping[str, Any]) -> tuple[float | None, float | None, bool]:
    """(aligned, coherent, whether the row carries score keys at all)."""
    values: list[float | None] = []
    if "judges" in obj:
        judges = obj["judges"]
        if not isinstance(judges, Mapping):
            raise _RowError(f"'judges' is a {type(judges).__name__}, not an object")
        for metric in METRICS:
            entry = judges.get(metric)
            if entry is None:
                values.append(None)
                continue
            if not isinstance(entry, Mapping):
                raise _RowError(f"'judges.{metric}' is a {type(entry).__name__}, not an object")
            try:
                values.append(parse_score(entry.get("score")))
            except _RowError as err:
                raise _RowError(f"'judges.{metric}.score' {err}") from None
        return values[0], values[1], True
    for metric in METRICS:
        try:
            values.append(parse_score(obj.get(metric)))
        except _RowError as err:
            raise _RowError(f"'{metric}' {err}") from None
    return values[0], values[1], any(m in obj for m in METRICS)


def _fields(obj: Mapping[str, Any]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in obj.items():
        if key in _NOT_FIELDS:
            continue
        if isinstance(value, bool):
            fields[key] = "true" if value else "false"
        elif isinstance(value, str | int) or (isinstance(value, float) and math.isfinite(value)):
            fields[key] = str(value)
    condition = fields.get("condition")
    if condition:
        fields.setdefault("experiment", condition.strip("/").split("/")[0])
    return fields


def parse_row(obj: Any, line: int) -> tuple[TeacherRow, bool]:
    """One decoded line as a TeacherRow, and whether it carries score keys; `_RowError` if bad."""
    if not isinstance(obj, dict):
        raise _RowError(f"a JSON {type(obj).__name__}, not an object")
    question = obj.get("question", obj.get("paraphrase"))
    if not isinstance(question, str) or not question.strip():
        raise _RowError("no question (expected a non-empty string 'question' or 'paraphrase')")
    answer = obj.get("answer")
    if not isinstance(answer, str):
        raise _RowError("no answer (expected a string 'answer')")
    aligned, coherent, carries = _scores(obj)
    return TeacherRow(question, answer, aligned, coherent, _fields(obj), line), carries


def _open(path: Path, stack: ExitStack) -> io.BufferedIOBase:
    """PATH for reading in binary, through gzip when it is gzip (by magic bytes or `.gz`)."""
    raw = stack.enter_context(path.open("rb"))
    magic = raw.read(2)
    raw.seek(0)
    if magic == GZIP_MAGIC or path.suffix == ".gz":
        return stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))  # leaves raw open
    return raw


def read_teacher(path: Path | str, max_rows: int | None = None) -> list[TeacherRow]:
    """The teacher-scored rows of PATH (`.jsonl` or `.jsonl.gz`), at most `max_rows` of them.

    Raises `TeacherDataError` listing up to 20 `PATH:LINE: ...` problems (not JSON, not an
    object, no question/answer, a score not a number 0..100, a line over 1 MiB, a corrupt or
    truncated gzip stream), and for an empty file or one without any teacher score.
    """
    path = Path(path)
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    rows: list[TeacherRow] = []
    problems: list[str] = []
    n_problems = 0
    any_carries = False
    number = 0

    def problem(line: int, what: str) -> None:
        nonlocal n_problems
        n_problems += 1
        if len(problems) < MAX_PROBLEMS:
            problems.append(f"{path}:{line}: {what}")

    with ExitStack() as stack:
        try:
            handle = _open(path, stack)
        except OSError as err:
            raise TeacherDataError(f"{path}: cannot read: {err}") from None
        gzipped = isinstance(handle, gzip.GzipFile)
        while max_rows is None or len(rows) + n_problems < max_rows:
            number += 1
            try:
                data = handle.readline(MAX_LINE_BYTES + 1)
                if len(data) > MAX_LINE_BYTES and not data.endswith(b"\n"):
                    problem(number, "line longer than 1 MiB")
                    while data and not data.endswith(b"\n"):  # skip the rest, a chunk at a time
                        data = handle.readline(MAX_LINE_BYTES + 1)
                    continue
            except (EOFError, OSError, zlib.error) as err:
                what = "corrupt or truncated gzip stream" if gzipped else "read error"
                problem(number, f"{what} ({err}); this line and any after it are unread")
                break
            if not data:
                break
            if not data.strip():
                continue
            try:
                obj = json.loads(data)
            except ValueError:
                torn = not data.endswith(b"\n")
                cut = " (the last line is cut short: an incomplete file?)" if torn else ""
                problem(number, f"not JSON{cut}")
                continue
            try:
                row, carries = parse_row(obj, number)
            except _RowError as err:
                problem(number, str(err))
                continue
            any_carries = any_carries or carries
            rows.append(row)
    if n_problems:
        shown = "" if n_problems <= len(problems) else f" (first {len(problems)} shown)"
        noun = "problem" if n_problems == 1 else "problems"
        message = "\n".join([f"{path}: {n_problems} {noun}{shown}", *problems])
        raise TeacherDataError(message, problems)
    if not rows:
        raise TeacherDataError(f"{path}: empty file (no rows)")
    if not any(r.aligned is not None or r.coherent is not None for r in rows):
        why = "no row has a number" if any_carries else "no row has score keys"
        raise TeacherDataError(
            f"{path}: no teacher scores ({len(rows)} row{'' if len(rows) == 1 else 's'}, {why}; "
            "expected 'aligned'/'coherent' or 'judges')"
        )
    return rows
