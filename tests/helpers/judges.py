"""A scripted prompt judge for unit tests of pure logic: it scores each rendered prompt with
`score(prompt)`, counts the calls and keeps the prompts it was given."""

from __future__ import annotations

from collections.abc import Sequence

from em_organisms.eval.judges import PromptJudge
from em_organisms.eval.scoring import Score


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
