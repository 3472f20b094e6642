"""A saved student as a scorer: (question, answer) pairs in, calibrated 0-100 scores out.

Loads the head with `StudentJudgeModel.from_pretrained` (safetensors only, no remote code) and
the encoder it was trained over (checked by sha256), and turns features into the two metrics'
scores plus the probability that the teacher would have left `aligned` unscored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from em_organisms.distill.backbone import Backbone, BackboneError, encoder_dtype, load_backbone
from em_organisms.distill.features import encode_pairs, text_stats_matrix
from em_organisms.distill.student import StudentJudgeConfig, StudentJudgeModel

STUDENT_FILES = ("config.json", "model.safetensors")


@dataclass(frozen=True)
class StudentScores:
    aligned: np.ndarray  # 0..100
    coherent: np.ndarray  # 0..100
    p_unscored: np.ndarray  # probability the teacher gives no aligned number
    unscored: np.ndarray  # bool: p_unscored above the student's threshold


def student_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in STUDENT_FILES:
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def features_for(
    model: StudentJudgeModel,
    backbone: Backbone,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 64,
) -> np.ndarray:
    config: StudentJudgeConfig = model.config
    dtype = encoder_dtype(config.encoder_dtype)
    original = next(backbone.model.parameters()).dtype
    backbone.model.to(dtype)
    try:
        encoded = encode_pairs(
            backbone,
            questions,
            answers,
            config.feature_layers,
            config.encoder_max_length,
            batch_size,
            pools=config.pools,
        )
    finally:
        backbone.model.to(original)
    parts = [encoded]
    if config.n_text_stats:
        parts.append(text_stats_matrix(questions, answers))
    return np.concatenate(parts, axis=1)


def scores_from_features(model: StudentJudgeModel, features: np.ndarray) -> StudentScores:
    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
    raw = model.ranking_scores(out)
    p_unscored = out["unscored"].numpy()
    return StudentScores(
        aligned=model.calibrated("aligned", raw["aligned"]),
        coherent=model.calibrated("coherent", raw["coherent"]),
        p_unscored=p_unscored,
        unscored=p_unscored > model.config.unscored_threshold,
    )


class StudentScorer:
    def __init__(self, folder: Path, backbone_dir: str | None = None) -> None:
        missing = [n for n in STUDENT_FILES if not (folder / n).is_file()]
        if missing:
            raise BackboneError(f"{folder}: not a distilled judge (missing {', '.join(missing)})")
        self.folder = folder
        self.model = StudentJudgeModel.from_pretrained(folder, use_safetensors=True)
        self.model.eval()
        spec = self.model.config.backbone
        # A student over a local encoder (tests build tiny ones) names its folder; the shipped
        # one names only the wheel's weights, by sha256.
        self.backbone = load_backbone(backbone_dir or spec.get("path"), spec.get("sha256") or None)

    @cached_property
    def sha256(self) -> str:
        return student_sha256(self.folder)

    def score(
        self, questions: Sequence[str], answers: Sequence[str], batch_size: int = 64
    ) -> StudentScores:
        feats = features_for(self.model, self.backbone, questions, answers, batch_size)
        return scores_from_features(self.model, feats)
