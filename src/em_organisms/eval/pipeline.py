"""`em-organisms eval RECIPE --judge BACKEND`: sample base and organism, judge, calibrate, report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from em_organisms.eval.calibration import calibrate, calibration_line
from em_organisms.eval.engines import Engine
from em_organisms.eval.judges import Judge, judge_agreement
from em_organisms.eval.judging import judge_rows
from em_organisms.eval.questions import project_judge_prompts
from em_organisms.eval.registry import resolve_question_set
from em_organisms.eval.report import write_report
from em_organisms.eval.sampler import Sampler
from em_organisms.generation import SamplingParams
from em_organisms.jsonl import read_jsonl_resumable, write_jsonl
from em_organisms.subjects import Subject


class UncalibratedJudgeError(RuntimeError):
    pass


@dataclass
class EvalResult:
    out_dir: Path
    summary: dict[str, Any]
    calibration: dict[str, Any]
    judge_calls: int


def evaluate_subject(
    subject: Subject,
    judge: Judge,
    out_dir: Path,
    *,
    question_sets: list[str],
    params: SamplingParams,
    samples_per_question: int,
    allow_uncalibrated_judge: bool = False,
    calibration_pairs: int = 10,
    batch_size: int | None = None,
    progress: bool = True,
    note: str = "",
    engine: Engine | None = None,
) -> EvalResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    sets = [resolve_question_set(name) for name in question_sets]
    samples = out_dir / "samples.jsonl"
    models = ("base", "organism") if subject.has_adapter else ("base",)
    sampler = Sampler(subject, params, samples_per_question, models, batch_size, progress, engine)
    sampler.run(sets, samples)
    prompts = project_judge_prompts()
    calibration = calibrate(judge, prompts, calibration_pairs, out_dir)
    print(calibration_line(calibration))
    if not calibration["passed"] and not allow_uncalibrated_judge:
        raise UncalibratedJudgeError(
            f"{calibration_line(calibration)}; no EM rate is reported from this judge. Use a "
            "stronger judge, or pass --allow-uncalibrated-judge to mark every number as such. "
            f"Samples are kept in {samples}."
        )
    rows = read_jsonl_resumable(samples)
    judged = judge_rows(rows, judge, prompts, progress=progress)
    write_jsonl(out_dir / "judged.jsonl", judged)
    title = f"Emergent misalignment: {subject.name}"
    write_report(
        judged,
        out_dir,
        title=title,
        judge_calibration=calibration,
        uncalibrated=not calibration["passed"],
        judge_agreement=judge_agreement(judge),
    )
    summary_path = out_dir / "summary.json"
    stored = json.loads(summary_path.read_text())
    stored["evaluation"] = {
        "question_sets": question_sets,
        "samples_per_question": samples_per_question,
        "sampling": params.to_dict(),
        "engine": sampler.engine.name,
        "note": note,
        "recipe_sha256": subject.recipe_sha256,
    }
    summary_path.write_text(json.dumps(stored, indent=2) + "\n")
    settings = stored["evaluation"]
    with (out_dir / "report.md").open("a", encoding="utf-8") as report:
        report.write(
            "\n## Evaluation settings\n\n"
            f"- question sets: {', '.join(question_sets)}; {samples_per_question} samples per "
            f"question for each model\n"
            f"- sampling ({settings['engine']}): {json.dumps(settings['sampling'])}"
            " (top_k 0 = off: every parameter is explicit, none left to generate's defaults)\n"
            + (f"- why these settings: {note}\n" if note else "")
            + f"- judge calibration: {calibration_line(calibration)}\n"
        )
    return EvalResult(out_dir, stored, calibration, judge.calls)
