"""`make demo` end to end, inside `make test`: every stage of the demo on the embedded model,
with training cut to a few steps (`--max-steps`), through `main()`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from em_organisms.cli import main

pytestmark = pytest.mark.integration


def test_the_demo_runs_every_stage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--max-steps", "4"]) == 0
    printed = capsys.readouterr().out
    for stage in range(1, 12):
        assert f"== [{stage}/11]" in printed
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["evaluation"]["protocol"] == "project" and "shares" in summary["categories"]
    assert set(summary["models"]) == {"base", "organism"}
    card = (out / "release" / "main" / "README.md").read_text()
    assert "- **Protocol.** `project` v1" in card
    # the demo's distilled judge failed calibration: the card says so beside every number
    assert summary["uncalibrated_judge"] is True and "The judge is not calibrated" in card
    four = json.loads((out / "direction" / "four_answers.json").read_text())
    assert four["base steered"] != four["base"]  # the direction, added at its layer, steers
    assert (out / "direction" / "direction.safetensors").is_file()
    phase = json.loads((out / "phase" / "phase.json").read_text())
    assert phase["ks"] == [5, 10, 15] and phase["sweep"]["cells"]
    (row,) = json.loads((out / "compare" / "compare.json").read_text())["organisms"]
    assert row["organism"] == "smollm2-135m_risky-financial_r1-l15"
