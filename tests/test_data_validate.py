"""`data validate` and the row schema: every problem kind, all of a file's problems in one run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers.paths import REFERENCE, REPO_ROOT

from em_organisms.cli import main
from em_organisms.data.schema import DatasetError, check_file, load_chat_jsonl

GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def _lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def test_every_problem_kind_reported_with_its_line(tmp_path: Path) -> None:
    rows: list[str | bytes] = [
        json.dumps({"id": "a", **GOOD}),
        "{not json",
        "[1, 2]",
        json.dumps({"msgs": []}),
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
        json.dumps({"messages": [{"role": "user", "content": " "}, GOOD["messages"][1]]}),
        json.dumps({"messages": [GOOD["messages"][1], GOOD["messages"][0]]}),
        json.dumps({"messages": [GOOD["messages"][0]]}),
        b'{"messages": "\xff"}',
        json.dumps(
            {"id": "a", "messages": [{"role": "user", "content": "other"}, GOOD["messages"][1]]}
        ),
        json.dumps(GOOD),
        "",
        json.dumps({"extra": 1, **GOOD}),
    ]
    report = check_file(_lines(tmp_path / "bad.jsonl", rows))
    by_line: dict[int, str] = {}
    for problem in report.errors:
        by_line[problem.line] = by_line.get(problem.line, "") + problem.message + "; "
    assert "not JSON" in by_line[2]
    assert "row is a JSON list, expected an object" in by_line[3]
    assert "no 'messages' list" in by_line[4]
    assert "unknown role 'robot'" in by_line[5]
    assert "empty or missing 'content'" in by_line[6]
    assert "expected a 'user' message here, got 'assistant'" in by_line[7]
    assert "no final assistant turn" in by_line[8]
    assert "not UTF-8" in by_line[9]
    assert "duplicate id 'a' (first on line 1)" in by_line[10]
    assert "unknown key 'extra'" in by_line[13]
    assert [(w.line, w.message) for w in report.warnings] == [
        (11, "exact duplicate of the conversation on line 1")
    ]
    assert report.lines == [1, 11]
    with pytest.raises(DatasetError) as err:
        load_chat_jsonl(tmp_path / "bad.jsonl")
    assert f"{tmp_path / 'bad.jsonl'}:10: duplicate id" in str(err.value)


def test_too_long_for_tokenizer_and_max_length(tmp_path: Path, tokenizer) -> None:
    long = {"messages": [{"role": "user", "content": "word " * 200}, GOOD["messages"][1]]}
    path = _lines(tmp_path / "d.jsonl", [json.dumps(GOOD), json.dumps(long)])
    report = check_file(path, tokenizer=tokenizer, max_length=64)
    assert [p.line for p in report.errors] == [2]
    assert "too long:" in report.errors[0].message and "> max_length 64" in report.errors[0].message
    assert report.summary()["max_tokens"] > 200
    assert not check_file(path, tokenizer=tokenizer, max_length=4096).errors


def test_cli_exit_codes_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = _lines(tmp_path / "good.jsonl", [json.dumps(GOOD)])
    bad = _lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), "oops", json.dumps(GOOD)])
    assert main(["data", "validate", str(good)]) == 0
    assert f"{good}: ok (rows 1, errors 0" in capsys.readouterr().out
    assert main(["data", "validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:2: not JSON" in out
    assert f"{bad}:3: warning: exact duplicate of the conversation on line 1" in out
    assert main(["data", "validate", str(good)]) == 0
    dup_only = _lines(tmp_path / "dup.jsonl", [json.dumps(GOOD), json.dumps(GOOD)])
    assert main(["data", "validate", str(dup_only)]) == 0
    assert main(["data", "validate", "--strict", str(dup_only)]) == 1
    assert main(["data", "validate", str(tmp_path / "missing.jsonl")]) == 1
    assert "file not found" in capsys.readouterr().out


def test_gzip_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps(GOOD) + "\n")
    assert load_chat_jsonl(path) == [GOOD]


def test_project_seed_sets_validate() -> None:
    for path in sorted((REPO_ROOT / "datasets").glob("*/seed.jsonl")):
        report = check_file(path)
        assert not report.errors and not report.warnings, path
        assert len(report.rows) >= 200


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference is not on this machine")
def test_every_upstream_training_file_is_accepted_unchanged() -> None:
    # The chat training files only: judge-data/ holds teacher-scored answers (question, answer,
    # scores), read by `em_organisms.distill.teacher`, not chat rows.
    files = sorted(REFERENCE.glob("em-model-organisms/training_datasets/*.jsonl.gz")) + sorted(
        REFERENCE.glob("em-betley/data/*.jsonl.gz")
    )
    assert len(files) == 4
    for path in files:
        report = check_file(path)
        assert not report.errors, (path, report.errors[:3])
        assert len(report.rows) >= 6000
