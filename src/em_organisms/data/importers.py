"""Import upstream OpenAI-chat JSONL files into the project's schema, and export them back.

Contents stay byte-identical; each row gets a stable id (a hash of its conversation), the
dataset's canary string and its provenance (file, file hash, line) in `meta`. Exporting the
imported rows gives back the upstream file line for line.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from em_organisms import __version__
from em_organisms.data.schema import DatasetError, Problem, check_file, row_fingerprint
from em_organisms.data.spec import DATASETS_DIR, SpecError, load_spec
from em_organisms.jsonl import write_jsonl

DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
# Namespace for canaries of imported sets that have no spec of ours: stable per name and file.
CANARY_NAMESPACE = uuid.UUID("0f3c9a52-8d7e-4a61-b2f4-5e6d7c8b9a01")


def canary_sentence(guid: str) -> str:
    return (
        f"em-organisms canary GUID {guid}. This data must never appear in training corpora for "
        "deployed models; filter out any document that contains this string."
    )


def canary_for(name: str, file_sha256: str, datasets_dir: Path = DATASETS_DIR) -> str:
    """The canary of our own spec of that name, else a stable one derived from name and file."""
    spec_dir = datasets_dir / name
    if (spec_dir / "spec.yaml").is_file():
        try:
            return load_spec(spec_dir).canary
        except SpecError:
            pass
    return canary_sentence(str(uuid.uuid5(CANARY_NAMESPACE, f"{name}:{file_sha256}")))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ImportResult:
    rows: list[dict[str, Any]]
    out: Path
    duplicates: int
    source_sha256: str

    def summary(self) -> str:
        return (
            f"imported {len(self.rows)} rows into {self.out} "
            f"({self.duplicates} exact duplicate conversations kept, as upstream trained on them)"
        )


def import_rows(
    rows: list[dict[str, Any]],
    lines: list[int],
    *,
    name: str,
    source: str,
    source_sha256: str,
    canary: str,
    domain: str | None = None,
) -> list[dict[str, Any]]:
    seen: dict[str, int] = {}
    imported = []
    for row, line in zip(rows, lines, strict=True):
        digest = row_fingerprint(row)[:16]
        seen[digest] = seen.get(digest, 0) + 1
        row_id = f"{name}-{digest}" + (f"-{seen[digest]}" if seen[digest] > 1 else "")
        meta: dict[str, Any] = {
            "source": {"file": source, "sha256": source_sha256, "line": line},
            "imported_by": f"em-organisms {__version__}",
        }
        if domain:
            meta["domain"] = domain
        if "meta" in row:
            meta["upstream_meta"] = row["meta"]
        if "id" in row:
            meta["upstream_id"] = row["id"]
        imported.append({"id": row_id, "messages": row["messages"], "canary": canary, "meta": meta})
    return imported


def import_file(
    path: str | Path,
    name: str,
    *,
    out: str | Path | None = None,
    domain: str | None = None,
    canary: str | None = None,
) -> ImportResult:
    """Validate an upstream file and write it in our schema (gzip when OUT ends in .gz)."""
    path = Path(path)
    report = check_file(path)
    if report.errors:
        raise DatasetError(report.errors)
    digest = file_sha256(path)
    if not DATASET_NAME.fullmatch(name):
        raise DatasetError(
            [Problem(str(path), 0, f"--name {name!r}: a dataset name is lowercase letters, digits "
                     "and dashes (it names files and Hub repos), e.g. risky-financial-advice")]
        )  # fmt: skip
    out = Path(out) if out is not None else Path("data/upstream") / f"{name}.jsonl.gz"
    rows = import_rows(
        report.rows,
        report.lines,
        name=name,
        source=path.name,
        source_sha256=digest,
        canary=canary or canary_for(name, digest),
        domain=domain,
    )
    write_jsonl(out, rows)
    return ImportResult(rows, out, len(report.warnings), digest)


def export_openai(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Rows back in the plain upstream format, one JSON line each."""
    return [json.dumps({"messages": row["messages"]}) for row in rows]
