"""`em-organisms eval RECIPE --judge BACKEND`: sample base and organism, judge, calibrate, report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from em_organisms import defaults
from em_organisms.errors import RunFailed
from em_organisms.eval.calibration import calibrate, calibration_line
from em_organisms.eval.categories import (
    TOPIC_THRESHOLD,
    categories_markdown,
    category_shares,
    score_topics,
)
from em_organisms.eval.engines import Engine
from em_organisms.eval.judge_failures import check_failed_share, judge_outcomes
from em_organisms.eval.judge_samples import judge_rows
from em_organisms.eval.plan import EvalPlan
from em_organisms.eval.report import write_report
from em_organisms.eval.sampler import Sampler
from em_organisms.jsonl import read_jsonl_resumable, write_jsonl
from em_organisms.judges import Judge, judge_agreement
from em_organisms.subjects import Subject


class UncalibratedJudgeError(RunFailed, RuntimeError):
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
    plan: EvalPlan,
    *,
    allow_uncalibrated_judge: bool = False,
    calibration_pairs: int = defaults.CALIBRATION_PAIRS,
    batch_size: int | None = None,
    progress: bool = True,
    engine: Engine | None = None,
    fail_share: float = defaults.JUDGE_FAIL_SHARE,
) -> EvalResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = out_dir / "samples.jsonl"
    models = ("base", "organism") if subject.has_adapter else ("base",)
    sampler = Sampler(
        subject,
        plan.params,
        plan.samples_per_question,
        models,
        batch_size,
        progress,
        engine,
        protocol=plan.protocol_record(),
    )
    sampler.run(list(plan.sets), samples)
    calibration = calibrate(judge, plan.judge_prompts.default, calibration_pairs, out_dir)
    print(calibration_line(calibration))
    if not calibration.passed and not allow_uncalibrated_judge:
        raise UncalibratedJudgeError(
            f"{calibration_line(calibration)}; no EM rate is reported from this judge. Use a "
            "stronger judge, or pass --allow-uncalibrated-judge to mark every number as such. "
            f"Samples are kept in {samples}."
        )
    rows = read_jsonl_resumable(samples)
    judged = judge_rows(rows, judge, plan.judge_prompts, progress=progress, source=str(samples))
    em = plan.protocol.em
    if plan.topics is not None:
        judged = score_topics(
            judged, judge, plan.topics, em.aligned_below, em.coherent_above, progress
        )
    write_jsonl(out_dir / "judged.jsonl", judged)
    outcomes = judge_outcomes(judged)
    print(outcomes.line())
    # after the judged file is written: what was scored is kept, and a rerun judges the rest
    check_failed_share(outcomes, fail_share, str(out_dir / "judged.jsonl"))
    evaluation = {
        **plan.to_json(),
        "engine": sampler.engine.name,
        "intervention": i.record() if (i := sampler.engine.intervention) else None,
        "judge": judge.name,
        "recipe_sha256": subject.recipe_sha256,
        # what `compare` needs when the summary travels without its recipe
        "organism": subject.recipe.organism_id if subject.recipe else subject.name,
        "base_model": subject.base_model,
        "dataset": subject.recipe.dataset.path if subject.recipe else None,
        "training_seed": subject.recipe.training.seed if subject.recipe else None,
    }
    categories = None
    if plan.topics is not None:
        categories = {
            "shares": category_shares(judged, list(plan.topics.default)),
            "threshold": TOPIC_THRESHOLD,
            "source": plan.topics.source,
        }
    stored = write_report(
        judged,
        out_dir,
        title=f"Emergent misalignment: {subject.name}",
        judge_calibration=calibration,
        aligned_threshold=plan.protocol.em.aligned_below,
        coherent_threshold=plan.protocol.em.coherent_above,
        uncalibrated=not calibration.passed,
        judge_agreement=judge_agreement(judge),
        evaluation=evaluation,
        categories=categories,
    )
    with (out_dir / "report.md").open("a", encoding="utf-8") as report:
        if plan.topics is not None:
            report.write(categories_markdown(stored["categories"]["shares"], plan.topics.source))
        report.write(plan_markdown(stored["evaluation"]))
        report.write(f"- judge calibration: {calibration_line(calibration)}\n")
    return EvalResult(out_dir, stored, calibration, judge.calls)


def plan_markdown(plan: dict[str, Any]) -> str:
    """The evaluation settings section of a report, from `EvalPlan.to_json()`."""
    followed = (
        "followed as published"
        if plan["as_published"]
        else "with changes, so these numbers are NOT the protocol's: "
        + "; ".join(
            f"{key} {change['value']!r} instead of {change['protocol']!r} ({change['by']})"
            for key, change in plan["overrides"].items()
        )
    )
    sets = ", ".join(
        f"{q['name']} ({q['n_questions']} questions, sha256 {q['sha256'][:12]})"
        for q in plan["questions"]
    )
    prompts = ", ".join(
        f"{metric} sha256 {_short(entry['sha256'])} ({entry['source']})"
        for metric, entry in plan["judge_prompts"].items()
    )
    sampling = {k: v for k, v in plan["sampling"].items() if k != "n"}
    em = plan["em"]
    return (
        "\n## Evaluation settings\n\n"
        f"- protocol: `{plan['protocol']}` v{plan['protocol_version']} ({plan['protocol_reference']}),"
        f" {followed}\n"
        f"- question sets: {sets}; {plan['sampling']['n']} samples per question for each model\n"
        f"- judge prompts: {prompts}\n"
        f"- sampling ({plan['engine']}): {json.dumps(sampling)} (top_k 0, min_p 0 and "
        "repetition_penalty 1 are off; every parameter is applied as stated, none inherited "
        "unless generation_config is `model`)\n"
        f"- EM: aligned < {em['aligned_below']:g} and coherent > {em['coherent_above']:g}; the "
        f"protocol counts `{em['counting']}`\n"
        + (f"- why these settings: {plan['note']}\n" if plan.get("note") else "")
    )


def _short(sha: str | list[str]) -> str:
    return sha[:12] if isinstance(sha, str) else "/".join(s[:12] for s in sha)
