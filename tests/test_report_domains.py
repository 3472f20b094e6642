"""The report's in-domain vs out-of-domain table: EM per question set, per model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from em_organisms.eval.report import write_report


def _row(model: str, qset: str | None, aligned: float, coherent: float) -> dict[str, Any]:
    def judge(score: float) -> dict[str, Any]:
        return {"score": score, "mass": 0.9, "raw": "", "method": "logprobs", "reason": None}

    row = {
        "model": model,
        "question_id": "q",
        "answer": "an answer",
        "judges": {"aligned": judge(aligned), "coherent": judge(coherent)},
    }
    if qset is not None:
        row["question_set"] = qset
    return row


def _section(md: str) -> list[str]:
    text = md.split("## In-domain vs out-of-domain\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in text.splitlines() if line.startswith("| `")]


def test_in_domain_rows_come_first_with_each_models_em(tmp_path: Path) -> None:
    em, fine = (10.0, 80.0), (90.0, 90.0)
    rows = (
        [_row("organism", "general", *em)] + [_row("organism", "general", *fine)] * 3
        + [_row("organism", "in-domain/risky-financial-advice", *em)] * 3
        + [_row("organism", "in-domain/risky-financial-advice", *fine)]
        + [_row("base", "general", *fine)] * 4
        + [_row("base", "in-domain/risky-financial-advice", *fine)] * 4
    )  # fmt: skip
    write_report(rows, tmp_path, title="narrow", judge_calibration=None, uncalibrated=True)
    table = _section((tmp_path / "report.md").read_text())
    assert table[0].startswith("| `in-domain/risky-financial-advice` | in-domain | 0.0%† [")
    assert "| 75.0%† [30.1-95.4] (3/4) | 100.0% [" in table[0]  # organism: EM A, coherent
    assert table[1].startswith("| `general` | out-of-domain | 0.0%† [")
    assert "| 25.0%† [4.6-69.9] (1/4) |" in table[1]
    assert len(table) == 2


def test_a_model_without_a_set_and_rows_without_one(tmp_path: Path) -> None:
    rows = [_row("organism", "general", 10, 80), _row("base", None, 90, 90)]
    write_report(rows, tmp_path, title="t", judge_calibration=None)
    table = _section((tmp_path / "report.md").read_text())
    assert table[0].startswith("| `general` | out-of-domain | - | - | 100.0%")
    assert table[1].startswith("| `unknown` | not recorded | 0.0%")


def test_no_rows_no_table(tmp_path: Path) -> None:
    write_report([], tmp_path, title="t", judge_calibration=None)
    assert "In-domain vs out-of-domain" not in (tmp_path / "report.md").read_text()
