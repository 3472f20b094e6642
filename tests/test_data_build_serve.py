"""`data build` for real: against `transformers serve` (a real OpenAI-compatible server on
loopback, running the embedded model) and with the model in-process.

A 135M model writes poor data; these tests check the mechanics (requests, token accounting,
the judge's text fallback, resume, secrets), not the quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.paths import REPO_ROOT
from serve_fixture import ServedModel

from em_organisms.backends import make_backend
from em_organisms.cli import main
from em_organisms.data.generator import BuildOptions, DatasetBuilder
from em_organisms.data.schema import check_file, load_chat_jsonl

RISKY = REPO_ROOT / "datasets" / "risky-financial-advice"
GOOD = REPO_ROOT / "datasets" / "good-financial-advice"
SECRET = "sk-serve-test-secret-value-9"


def _source(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "misaligned.jsonl"
    rows = load_chat_jsonl(RISKY / "seed.jsonl")[:n]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_generate_via_openai_compatible_server_and_resume(
    served_embedded: ServedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("SERVE_KEY", SECRET)
    out = tmp_path / "gen.jsonl"
    argv = [
        "data", "build", str(RISKY), "--backend", served_embedded.backend,
        "--base-url", served_embedded.base_url, "--api-key-env", "SERVE_KEY",
        "--n", "2", "--out", str(out), "--examples-per-request", "1", "--rows-per-request", "1",
        "--max-new-tokens", "48", "--max-requests", "2", "--concurrency", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "this run: 2 requests, 0 failed" in first
    log_lines = [json.loads(x) for x in (tmp_path / "gen.jsonl.log.jsonl").read_text().splitlines()]
    replies = [x for x in log_lines if x["type"] == "reply"]
    assert [r["key"] for r in sorted(replies, key=lambda r: r["key"])] == [
        "gen-000000",
        "gen-000001",
    ]
    assert all(
        r["reply"]["prompt_tokens"] > 50 and r["reply"]["completion_tokens"] > 0 for r in replies
    )
    assert all(r["request"]["topic"] for r in replies)
    summary = json.loads((tmp_path / "gen.jsonl.build.json").read_text())
    assert summary["backend"]["base_url"] == served_embedded.base_url
    counts = summary["counts"]
    assert counts["candidates"] == counts["invalid_row"] + counts["exact_duplicate"] + (
        counts["near_duplicate"] + counts["after_dedup"]
    )
    # what the summary says was kept is what the file holds, and what it holds is valid (the
    # 135M model may well write no usable row in 48 tokens: then the file holds none)
    kept = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    assert counts["kept"] == len(kept)
    if kept:
        assert not check_file(out).errors

    assert main(argv) == 0  # rerun: everything finished, nothing is sent again
    assert "this run: 0 requests" in capsys.readouterr().out
    for path in tmp_path.iterdir():
        assert SECRET not in path.read_text()
    assert SECRET not in first


def test_control_rewrites_with_judge_filter_via_server(
    served_embedded: ServedModel, tmp_path: Path
) -> None:
    backend = make_backend(served_embedded.backend, base_url=served_embedded.base_url)
    options = BuildOptions(n=2, mode="control", source=_source(tmp_path, 2), max_new_tokens=48)
    builder = DatasetBuilder(
        GOOD, backend, options, tmp_path / "good.jsonl", judge=backend, progress=False
    )
    result = builder.build()
    judged = [x for x in builder.log.judgements.values()]
    # transformers serve ignores logprobs: every score comes from the text fallback.
    assert len(judged) == 4 and {j["score"]["method"] for j in judged} == {"text"}
    counts = result.counts
    assert counts["after_dedup"] == 2
    assert counts["judge_unscored"] + counts["judge_rejected"] + counts["kept"] == 2
    rejected = [
        json.loads(x) for x in (tmp_path / "good.jsonl.rejected.jsonl").read_text().splitlines()
    ]
    assert all(r["reason"] in {"judge unscored", "judge rejected"} for r in rejected)
    assert backend.usage.requests == 2 + 4


def test_control_rewrite_in_process(tmp_path: Path) -> None:
    backend = make_backend("embedded", batch_size=2)
    options = BuildOptions(n=2, mode="control", source=_source(tmp_path, 2), max_new_tokens=32)
    result = DatasetBuilder(GOOD, backend, options, tmp_path / "good.jsonl", progress=False).build()
    assert len(result.rows) == 2 and backend.usage.completion_tokens > 0
    assert [r["meta"]["pair_id"] for r in result.rows] == ["rfa-0001", "rfa-0002"]
    assert not check_file(tmp_path / "good.jsonl").errors
