"""The append-only log of a dataset build: a header, then one line per reply or judgement.

A rerun reads it back and sends only what is not finished. The header holds everything that
changes what would be asked; a log made with other settings is refused rather than mixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from em_organisms.errors import EmOrganismsError
from em_organisms.jsonl import JsonlError, append_jsonl, read_jsonl_resumable


class BuildLogError(EmOrganismsError, ValueError):
    pass


class BuildLog:
    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = header
        self.replies: dict[str, dict[str, Any]] = {}  # finished requests (a text came back)
        self.failures: list[dict[str, Any]] = []
        self.judgements: dict[str, dict[str, Any]] = {}
        try:
            records = read_jsonl_resumable(path)  # a line torn by a crash is dropped
        except JsonlError as err:
            raise BuildLogError(str(err)) from None
        if records:
            self._read(records)
        else:  # a new log, or one whose header line was cut short
            self._append({"type": "header", **header})

    def _read(self, records: list[dict[str, Any]]) -> None:
        for number, record in enumerate(records, start=1):
            kind = record.get("type")
            if number == 1:
                stored = {k: v for k, v in record.items() if k != "type"}
                if kind != "header" or stored != self.header:
                    changed = sorted(
                        k
                        for k in set(stored) | set(self.header)
                        if stored.get(k) != self.header.get(k)
                    )
                    raise BuildLogError(
                        f"{self.path}: made with other settings (differs in: {', '.join(changed)}); "
                        "use another --out or delete the log to start over"
                    )
            elif kind == "reply":
                if record["reply"]["text"] is not None:
                    self.replies[record["key"]] = record
                else:
                    self.failures.append(record)
            elif kind == "judge":
                self.judgements[record["key"]] = record

    def _append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, [record])

    def add_reply(self, key: str, request: dict[str, Any], reply: dict[str, Any]) -> None:
        record = {"type": "reply", "key": key, "request": request, "reply": reply}
        self._append(record)
        if reply["text"] is not None:
            self.replies[key] = record
        else:
            self.failures.append(record)

    def add_judgement(self, key: str, record: dict[str, Any]) -> None:
        record = {"type": "judge", "key": key, **record}
        self._append(record)
        self.judgements[key] = record

    def token_totals(self) -> dict[str, int]:
        records = [*self.replies.values(), *self.failures, *self.judgements.values()]
        return {
            "prompt_tokens": sum(r["reply"]["prompt_tokens"] for r in records if "reply" in r),
            "completion_tokens": sum(
                r["reply"]["completion_tokens"] for r in records if "reply" in r
            ),
        }
