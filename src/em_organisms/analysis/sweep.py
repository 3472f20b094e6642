"""The behavioural half of the phase transition: EM rate over training steps and adapter scales.

One copy of the base model serves the whole sweep: each step's checkpoint weights are loaded
into the same PEFT adapter in turn (every checkpoint of a run shares one adapter config), then
sampled at each scale and judged. Samples and judged files are kept per (step, scale) under
OUT_DIR, so a rerun makes no new samples, and no judge calls for files already judged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from em_organisms import defaults
from em_organisms.adapters import Organism, load_organism
from em_organisms.analysis.rotation import rolling_mean
from em_organisms.analysis.trajectory import ADAPTER_FILE, PhaseError, Trajectory
from em_organisms.artifacts import read_adapter_config
from em_organisms.eval.judge_failures import check_failed_share, judge_outcomes
from em_organisms.eval.judge_prompts import JudgePrompts, template_sha256
from em_organisms.eval.judge_samples import METRICS, judge_file
from em_organisms.eval.metrics import em_stats
from em_organisms.eval.plan import EvalPlan
from em_organisms.eval.sampler import Sampler
from em_organisms.jsonl import read_jsonl_resumable
from em_organisms.judges import Judge, judge_agreement
from em_organisms.models import resolve_model
from em_organisms.subjects import Subject

ROLLING_WINDOW = 3  # swept checkpoints per rolling mean of the EM rate (centred)

# What must match between checkpoints for one PEFT model to hold each of them in turn.
_SHAPE_KEYS = ("r", "lora_alpha", "target_modules", "layers_to_transform", "use_rslora")


class SweepError(PhaseError):
    """A sweep cannot run as asked; says what is available instead."""


def pick_steps(available: list[int], count: int) -> list[int]:
    """COUNT steps spread evenly over AVAILABLE (sorted), always the first and the last (a
    count of 1 gives the last alone: the trained adapter)."""
    steps = sorted(set(available))
    if count < 1:
        raise SweepError(f"need at least 1 step to sweep, got {count}")
    if count >= len(steps):
        return steps
    if count == 1:
        return [steps[-1]]
    last = len(steps) - 1
    return sorted({steps[round(i * last / (count - 1))] for i in range(count)})


def check_steps(trajectory: Trajectory, steps: list[int]) -> None:
    """SweepError unless every step asked for has a checkpoint folder."""
    missing = [s for s in steps if s not in trajectory.checkpoints]
    if not steps or missing:
        raise SweepError(
            f"no checkpoint folder for step(s) {missing or '(none asked)'}; steps with one: "
            f"{sorted(trajectory.checkpoints) or 'none'}"
        )


def cell_name(step: int, scale: float) -> str:
    return f"step-{step:06d}_x{scale:g}"


def _shape(folder: Path) -> dict[str, Any]:
    config = read_adapter_config(folder).raw()
    shape = {key: config.get(key) for key in _SHAPE_KEYS}
    if isinstance(shape["target_modules"], list):
        shape["target_modules"] = sorted(shape["target_modules"])
    return shape


def load_step(organism: Organism, folder: Path, expected: dict[str, Any]) -> None:
    """Put FOLDER's adapter weights into ORGANISM's (already loaded) adapter."""
    found = _shape(folder)
    if found != expected:
        differ = {k: (expected[k], found[k]) for k in _SHAPE_KEYS if found[k] != expected[k]}
        raise SweepError(
            f"{folder}: adapter config differs from the first checkpoint's "
            f"(key: (first, this)): {differ}; a sweep needs one adapter shape throughout"
        )
    state = load_file(folder / ADAPTER_FILE)
    result = set_peft_model_state_dict(organism.model, state)
    lora_missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or lora_missing:
        raise SweepError(
            f"{folder}: adapter weights do not fit the loaded adapter "
            f"(unexpected {result.unexpected_keys[:3]}, missing {lora_missing[:3]})"
        )


def _judged_complete(samples: Path, judged: Path, judge: Judge, prompts: JudgePrompts) -> bool:
    """Whether JUDGED already holds every sample, scored by this judge with these prompts, and
    none failed (a failed score is asked again; the cache keeps the scored ones)."""
    rows = read_jsonl_resumable(judged)

    def same_prompts(number: int, row: dict[str, Any]) -> bool:
        templates = prompts.for_row(row, f"{judged}:{number}")
        return row.get("judge_prompt_sha256") == {m: template_sha256(templates[m]) for m in METRICS}

    return (
        len(rows) == len(read_jsonl_resumable(samples))
        and bool(rows)
        and all(r.get("judge_model") == judge.name for r in rows)
        and all(same_prompts(n, r) for n, r in enumerate(rows, start=1))
        and judge_outcomes(rows).n_failed == 0
    )


def run_sweep(
    trajectory: Trajectory,
    steps: list[int],
    scales: list[float],
    plan: EvalPlan,
    judge: Judge,
    out_dir: Path,
    device: str | None = None,
    progress: bool = True,
    fail_share: float = defaults.JUDGE_FAIL_SHARE,
) -> dict[str, Any]:
    """Sample and judge every (step, scale) under PLAN; return the grid of EM rates (JSON-able).
    A cell where FAIL_SHARE of the judge scores failed stops the sweep (its judged file kept)."""
    check_steps(trajectory, steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = Path(trajectory.checkpoints[steps[0]])
    organism = load_organism(str(first), base=trajectory.base_spec, device=device)
    expected = _shape(first)
    base_model = resolve_model(organism.base_model).hub_id or organism.base_model
    cells = []
    for step in steps:
        folder = Path(trajectory.checkpoints[step])
        load_step(organism, folder, expected)
        subject = Subject(
            name=f"step-{step:06d}",
            base_model=base_model,
            model=organism.model,
            tokenizer=organism.tokenizer,
            organism=organism,
            adapter=str(folder),
            base_spec=organism.base_model,
        )
        sampler = Sampler(
            subject,
            plan.params,
            plan.samples_per_question,
            models=("organism",),
            progress=progress,
            protocol=plan.protocol_record(),
        )
        for scale in scales:
            samples = out_dir / f"{cell_name(step, scale)}.samples.jsonl"
            judged_path = out_dir / f"{cell_name(step, scale)}.judged.jsonl"
            sampler.run(list(plan.sets), samples, scale=scale)
            if _judged_complete(samples, judged_path, judge, plan.judge_prompts):
                judged = read_jsonl_resumable(judged_path)
            else:
                judged = judge_file(
                    samples, judged_path, judge, plan.judge_prompts, progress=progress
                )
            outcomes = judge_outcomes(judged)
            check_failed_share(outcomes, fail_share, str(judged_path))
            stats = em_stats(
                judged,
                aligned_threshold=plan.protocol.em.aligned_below,
                coherent_threshold=plan.protocol.em.coherent_above,
            )
            cells.append(
                {
                    "step": step,
                    "scale": scale,
                    "em_all_scored": stats.em_all_scored.to_dict(),
                    "em_coherent_only": stats.em_coherent_only.to_dict(),
                    "coherence": stats.coherence.to_dict(),
                    "n_rows": stats.n_rows,
                    "n_scored": stats.n_scored,
                    "n_judge_failures": outcomes.n_failed,
                }
            )
    counting = plan.protocol.em.counting
    rolling = [
        {
            "scale": scale,
            counting: rolling_mean(
                [c[counting]["rate"] for c in cells if c["scale"] == scale], ROLLING_WINDOW
            ),
        }
        for scale in scales
    ]
    return {
        "steps": list(steps),
        "scales": list(scales),
        "counting": plan.protocol.em.counting,
        "rolling_window": ROLLING_WINDOW,
        "rolling": rolling,
        "question_sets": plan.question_sets,
        "samples_per_question": plan.samples_per_question,
        "generation": plan.params.to_dict(),
        "plan": plan.to_json(),
        "judge": judge.name,
        "judge_agreement": judge_agreement(judge),  # a distilled judge's, else None
        "cells": cells,
    }
