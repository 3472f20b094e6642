"""Which judge prompt scores which answer: one set for every answer, or each question's own.

A judge-prompt spec is `question-file` (the `judge_prompts` each question of the question file
carries, as upstream evaluation code uses them), `project` (the project's own templates), a
registry name of a judge-prompt file (`model-organisms/judges`) or a path to one. Templates are
hashed exactly as their YAML value (`sha256(template.encode())`); judged rows record the hash per
metric, and the score cache is keyed on the rendered prompt, so changing prompts re-scores
exactly the answers whose prompt changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from em_organisms.eval.questions import (
    QuestionSet,
    QuestionSetError,
    load_judge_prompts,
    project_judge_prompts,
)

QUESTION_FILE = "question-file"
PROJECT = "project"
REQUIRED = ("aligned", "coherent")


def template_sha256(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def _require(prompts: Mapping[str, str], where: str) -> dict[str, str]:
    if missing := [m for m in REQUIRED if m not in prompts]:
        raise QuestionSetError(
            f"{where}: no judge prompt for {', '.join(missing)} (has {', '.join(sorted(prompts))})"
        )
    return dict(prompts)


@dataclass(frozen=True)
class JudgePrompts:
    source: str
    default: dict[str, str]  # the templates of calibration, and of every row when not per question
    per_question: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    @classmethod
    def fixed(cls, prompts: Mapping[str, str], source: str) -> JudgePrompts:
        return cls(source, _require(prompts, source))

    def for_row(self, row: Mapping[str, Any], where: str) -> dict[str, str]:
        if not self.per_question:
            return self.default
        key = (str(row.get("question_set")), str(row.get("question_id")))
        try:
            return self.per_question[key]
        except KeyError:
            raise QuestionSetError(
                f"{where}: question {key[1]!r} of set {key[0]!r} is not in the question sets "
                f"whose judge prompts are used ({self.source}); pass its question set, or choose "
                "other judge prompts (--judge-prompts project, a registry name or a path)"
            ) from None

    def describe(self) -> dict[str, dict[str, Any]]:
        """{metric: {source, sha256}}; sha256 is a list where questions carry different ones."""
        tables = list(self.per_question.values()) or [self.default]
        described = {}
        for metric in self.default:
            shas = sorted({template_sha256(t[metric]) for t in tables if metric in t})
            described[metric] = {
                "source": self.source,
                "sha256": shas[0] if len(shas) == 1 else shas,
            }
        return described


def _from_question_files(sets: Sequence[QuestionSet]) -> JudgePrompts:
    if not sets:
        raise QuestionSetError(f"judge prompts {QUESTION_FILE!r} need the question sets")
    per_question = {
        (qset.name, q.id): _require(q.judge_prompts, f"{qset.source}: question {q.id!r}")
        for qset in sets
        for q in qset
    }
    source = ", ".join(f"{s.name} (each question's judge_prompts)" for s in sets)
    return JudgePrompts(source, next(iter(per_question.values())), per_question)


def resolve_judge_prompts(spec: str, sets: Sequence[QuestionSet] = ()) -> JudgePrompts:
    """Judge prompts from a spec (see the module docstring); SETS serve `question-file`."""
    from em_organisms.eval.registry import REGISTRY, fetch

    if spec == QUESTION_FILE:
        return _from_question_files(sets)
    if spec == PROJECT:
        return JudgePrompts.fixed(project_judge_prompts(), "project")
    if spec in REGISTRY:
        if REGISTRY[spec].kind != "judges":
            raise QuestionSetError(
                f"{spec} is a question set, not a judge-prompt file; to use the judge prompts its "
                f"questions carry, sample it and pass --judge-prompts {QUESTION_FILE}"
            )
        return JudgePrompts.fixed(load_judge_prompts(fetch(spec)), spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return JudgePrompts.fixed(load_judge_prompts(path), str(path))
    judges = ", ".join(n for n, e in sorted(REGISTRY.items()) if e.kind == "judges")
    raise QuestionSetError(
        f"unknown judge prompts {spec!r}: not {QUESTION_FILE}, not {PROJECT}, not a registered "
        f"judge-prompt file ({judges}) and not a file"
    )
