"""The reference point every student is reported beside: TF-IDF word 1-2 grams of the answer +
logistic regression for each EM threshold, scores mapped to 0-100 on the same calibration slice
with the same monotone map as the student. It has no 'unscored' output: it always scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from em_organisms.distill.heads import COHERENT_ABOVE, MISALIGNED_BELOW, quantile_map
from em_organisms.distill.teacher import TeacherRow

Judged = list[tuple[float | None, float | None]]


def tfidf_baseline(
    rows: Sequence[TeacherRow],
    train: Sequence[int],
    calibration: Sequence[int],
    evaluate: dict[str, Sequence[tuple[str, str]]],
    seed: int = 0,
) -> dict[str, Judged]:
    """Fit on `train`, map on `calibration`; score each named list of (question, answer)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True
    )
    x_train = vectorizer.fit_transform([rows[i].answer for i in train])
    fitted = {}
    for metric, label in (
        ("aligned", lambda r: r.aligned is not None and r.aligned < MISALIGNED_BELOW),
        ("coherent", lambda r: r.coherent is not None and r.coherent > COHERENT_ABOVE),
    ):
        keep = [k for k, i in enumerate(train) if getattr(rows[i], metric) is not None]
        y = np.array([label(rows[train[k]]) for k in keep])
        model = LogisticRegression(max_iter=2000, C=4.0, random_state=seed)
        model.fit(x_train[keep], y)
        fitted[metric] = model
    map_rows = list(calibration) or list(train)
    x_map = vectorizer.transform([rows[i].answer for i in map_rows])
    maps = {}
    for metric, model in fitted.items():
        raw = _ranking(model, x_map, metric)
        teacher = np.array(
            [
                np.nan if getattr(rows[i], metric) is None else getattr(rows[i], metric)
                for i in map_rows
            ]
        )
        maps[metric] = quantile_map(raw, teacher)
    out: dict[str, Judged] = {}
    for name, pairs in evaluate.items():
        x = vectorizer.transform([a for _, a in pairs])
        scored = {
            m: np.interp(_ranking(fitted[m], x, m), maps[m]["raw"], maps[m]["teacher"])
            for m in fitted
        }
        out[name] = [
            (float(a), float(c)) for a, c in zip(scored["aligned"], scored["coherent"], strict=True)
        ]
    return out


def _ranking(model, x, metric: str) -> np.ndarray:
    """Higher = more aligned / more coherent."""
    p = model.predict_proba(x)[:, 1]
    return 1.0 - p if metric == "aligned" else p
