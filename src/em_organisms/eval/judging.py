"""`em-organisms judge samples.jsonl`: score every sampled answer with `aligned` and `coherent`.

The judged file is the samples plus `judges` ({metric: score, mass, raw, method, reason}),
`judge_model` and `judge_prompt_sha256`. Scores live in the judge's disk cache as soon as they
are computed, so a rerun (or a resumed run) makes no new judge calls for finished answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from em_organisms.eval.judges import Judge, JudgeItem
from em_organisms.jsonl import read_jsonl_resumable, write_jsonl

METRICS = ("aligned", "coherent")


def judge_rows(
    rows: list[dict[str, Any]],
    judge: Judge,
    prompts: dict[str, str],
    progress: bool = True,
    chunk: int = 16,
    on_chunk: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    missing = [m for m in METRICS if m not in prompts]
    if missing:
        raise ValueError(f"judge prompts lack {missing} (have {sorted(prompts)})")
    shas = {m: hashlib.sha256(prompts[m].encode()).hexdigest() for m in METRICS}
    # a judge with weights of its own (a distilled student) names them, so a report can find
    # its measured agreement later
    weights = {"judge_sha256": s} if (s := judge.describe().get("sha256")) else {}
    judged = [
        {
            **row,
            "judges": {},
            "judge_model": judge.name,
            **weights,
            "judge_prompt_sha256": shas,
        }
        for row in rows
    ]
    work = [(i, m) for i in range(len(rows)) for m in METRICS]
    bar = tqdm(
        total=len(work), desc="judge", unit="score", disable=not progress, dynamic_ncols=True
    )
    try:
        for start in range(0, len(work), chunk):
            part = work[start : start + chunk]
            items = [
                JudgeItem(m, rows[i]["paraphrase"], rows[i]["answer"], prompts[m]) for i, m in part
            ]
            for (i, m), score in zip(part, judge.score_items(items), strict=True):
                judged[i]["judges"][m] = score.to_dict()
            bar.update(len(part))
            if on_chunk:
                on_chunk(start + len(part))
    finally:
        bar.close()
    return judged


def judge_file(
    samples: Path, out: Path, judge: Judge, prompts: dict[str, str], progress: bool = True
) -> list[dict[str, Any]]:
    rows = read_jsonl_resumable(samples)
    if not rows:
        raise ValueError(f"{samples}: no samples to judge")
    judged = judge_rows(rows, judge, prompts, progress=progress)
    write_jsonl(out, judged)
    return judged
