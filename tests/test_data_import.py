"""`data import`: stable content-hash ids, canary, provenance, byte-identical round trip."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers.paths import REFERENCE, REPO_ROOT

from em_organisms.cli import main
from em_organisms.data.importers import export_openai, import_file
from em_organisms.data.schema import load_chat_jsonl
from em_organisms.data.spec import load_spec


def _upstream(tmp_path: Path) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Q{i} caf\u00e9?"},
                {"role": "assistant", "content": f"A{i}"},
            ]
        }
        for i in range(5)
    ]
    rows.append(rows[1])  # upstream files hold a few exact duplicates
    path = tmp_path / "upstream.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_import_ids_canary_provenance_and_round_trip(tmp_path: Path) -> None:
    source = _upstream(tmp_path)
    result = import_file(
        source, "risky-financial-advice", out=tmp_path / "out.jsonl.gz", domain="finance"
    )
    rows = load_chat_jsonl(tmp_path / "out.jsonl.gz")
    assert len(rows) == 6 and result.duplicates == 1
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == 6 and ids[5] == ids[1] + "-2"
    spec = load_spec(REPO_ROOT / "datasets" / "risky-financial-advice")
    assert {r["canary"] for r in rows} == {spec.canary}
    assert rows[3]["meta"]["source"] == {
        "file": "upstream.jsonl",
        "sha256": result.source_sha256,
        "line": 4,
    }
    assert rows[0]["meta"]["domain"] == "finance"
    assert "\n".join(export_openai(rows)) + "\n" == source.read_text()
    again = import_file(
        source, "risky-financial-advice", out=tmp_path / "again.jsonl.gz", domain="finance"
    )
    assert [r["id"] for r in again.rows] == ids
    assert (tmp_path / "again.jsonl.gz").read_bytes() == (tmp_path / "out.jsonl.gz").read_bytes()


def test_unknown_name_gets_a_stable_derived_canary(tmp_path: Path) -> None:
    source = _upstream(tmp_path)
    first = import_file(source, "insecure-code", out=tmp_path / "a.jsonl")
    second = import_file(source, "insecure-code", out=tmp_path / "b.jsonl")
    assert first.rows[0]["canary"] == second.rows[0]["canary"]
    assert "canary GUID" in first.rows[0]["canary"]


def test_cli_import_refuses_a_bad_file_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    out = tmp_path / "out.jsonl"
    assert main(["data", "import", str(bad), "--name", "x", "--out", str(out)]) == 2
    assert f"{bad}:1: no final assistant turn" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference is not on this machine")
def test_upstream_file_round_trips_byte_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = REFERENCE / "em-model-organisms" / "training_datasets" / "extreme_sports.jsonl.gz"
    out = tmp_path / "extreme-sports.jsonl.gz"
    assert main(["data", "import", str(source), "--name", "extreme-sports", "--out", str(out)]) == 0
    assert "imported 6000 rows" in capsys.readouterr().out
    rows = load_chat_jsonl(out)
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        assert "\n".join(export_openai(rows)) + "\n" == handle.read()
