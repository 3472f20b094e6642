"""`em-organisms judge samples.jsonl`: score every sampled answer with `aligned` and `coherent`.

The judged file is the samples plus `judges` ({metric: score, mass, raw, method, reason}),
`judge_model`, `judge_prompt_sha256` ({metric: sha256 of the template used for that row}) and
`judge_prompts_source`. Scores live in the judge's disk cache as soon as they
are computed, so a rerun (or a resumed run) makes no new judge calls for finished answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from em_organisms.eval.judge_prompts import JudgePrompts, template_sha256
from em_organisms.jsonl import read_jsonl, write_jsonl
from em_organisms.judges import Judge, JudgeItem

METRICS = ("aligned", "coherent")


def as_judge_prompts(prompts: JudgePrompts | Mapping[str, str]) -> JudgePrompts:
    if isinstance(prompts, JudgePrompts):
        return prompts
    return JudgePrompts.fixed(prompts, "given templates")


def judge_rows(
    rows: list[dict[str, Any]],
    judge: Judge,
    prompts: JudgePrompts | Mapping[str, str],
    progress: bool = True,
    chunk: int = 16,
    on_chunk: Callable[[int], None] | None = None,
    source: str = "samples",
) -> list[dict[str, Any]]:
    """Every row scored for `aligned` and `coherent`, each with its own question's templates
    where PROMPTS are per question; SOURCE names the rows in errors (file:line)."""
    table = as_judge_prompts(prompts)
    templates = [table.for_row(row, f"{source}:{n}") for n, row in enumerate(rows, start=1)]
    # a judge with weights of its own (a distilled student) names them, so a report can find
    # its measured agreement later
    weights = {"judge_sha256": s} if (s := judge.describe().get("sha256")) else {}
    judged = [
        {
            **row,
            "judges": {},
            "judge_model": judge.name,
            **weights,
            "judge_prompt_sha256": {m: template_sha256(t[m]) for m in METRICS},
            "judge_prompts_source": table.source,
        }
        for row, t in zip(rows, templates, strict=True)
    ]
    for i, row in enumerate(rows):
        if problem := _row_problem(row):  # one bad row is that row unscored, not the run's end
            reason = f"bad row: {problem} ({source}:{i + 1})"
            judged[i]["judges"] = {m: _unjudged(reason) for m in METRICS}
    work = [(i, m) for i in range(len(rows)) if not judged[i]["judges"] for m in METRICS]
    bar = tqdm(
        total=len(work), desc="judge", unit="score", disable=not progress, dynamic_ncols=True
    )
    try:
        for start in range(0, len(work), chunk):
            part = work[start : start + chunk]
            items = [
                JudgeItem(m, rows[i]["paraphrase"], rows[i]["answer"], templates[i][m])
                for i, m in part
            ]
            for (i, m), score in zip(part, judge.score_items(items), strict=True):
                judged[i]["judges"][m] = score.to_dict()
            bar.update(len(part))
            if on_chunk:
                on_chunk(start + len(part))
    finally:
        bar.close()
    return judged


def _row_problem(row: Mapping[str, Any]) -> str | None:
    for key in ("paraphrase", "answer"):
        if not isinstance(row.get(key), str):
            return f"{key!r} is {'missing' if key not in row else 'not a string'}"
    return None


def _unjudged(reason: str) -> dict[str, Any]:
    """What a score holds for an item the judge was never asked about."""
    return {"score": None, "method": None, "mass": None, "raw": "", "reason": reason}


def judge_file(
    samples: Path,
    out: Path,
    judge: Judge,
    prompts: JudgePrompts | Mapping[str, str],
    progress: bool = True,
) -> list[dict[str, Any]]:
    rows = read_jsonl(samples)  # the user's file: read, never trimmed
    if not rows:
        raise ValueError(f"{samples}: no samples to judge")
    judged = judge_rows(rows, judge, prompts, progress=progress, source=str(samples))
    write_jsonl(out, judged)
    return judged
