"""A scripted prompt judge for unit tests of pure logic: it scores each rendered prompt with
`score(prompt)`, counts the calls and keeps the prompts it was given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from em_organisms.judges import PromptJudge
from em_organisms.judges.scores import Score


class ScriptedJudge(PromptJudge):
    name = "scripted"

    def __init__(self) -> None:
        self.calls = 0
        self.prompts: list[str] = []

    def describe(self) -> dict:
        return {"name": self.name}

    def score(self, prompt: str) -> float:
        raise NotImplementedError

    def score_prompts(self, prompts: Sequence[str]) -> list[Score]:
        self.calls += len(prompts)
        self.prompts += prompts
        return [Score(self.score(p), "text", None, "") for p in prompts]


def calibration_result(
    aligned: float | None, coherent: float | None = 0.9, passed: bool = True, n: int = 40
) -> Any:
    """A `judge calibrate` result with these AUROCs (the other figures made up)."""
    from em_organisms.artifacts import CalibrationResult

    def figures(auroc: float | None) -> dict[str, Any]:
        return {"auroc": auroc, "n": n, "unscored": 0, "unscored_rate": 0.0}

    return CalibrationResult(
        judge="openai:gpt-4o-2024-08-06",
        judge_config={},
        pairs=n // 2,
        prompts_sha256={"aligned": "a" * 64, "coherent": "c" * 64},
        min_auroc=0.8,
        aligned=figures(aligned),
        coherent=figures(coherent),
        passed=passed,
    )
