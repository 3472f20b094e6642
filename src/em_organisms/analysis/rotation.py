"""Where an adapter's direction turns during training: the mechanistic half of the phase transition.

Input: one vector per recorded step (a rank-1 adapter's B, or several adapters' vectors stacked
into one, each de-meaned over steps first when they are combined). Output, all pure numpy:

- the norm of the vector and its cosine to the final vector, per step;
- the local cosine for an offset k: cos(v[t] - v[t-k], v[t+k] - v[t]), 1 while the vector keeps
  moving the same way, dropping towards 0 (or below) where it turns;
- a 2-D PCA trajectory of the de-meaned vectors;
- the step of maximum rotation: the minimum, over the steps every offset reaches, of the local
  cosine averaged over the offsets; reported only when the local cosine there is below
  `threshold` for every offset, so noise (which shows at small offsets only) reports none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Rotation:
    steps: list[int]
    norm: list[float]
    cosine_to_final: list[float]
    local_cosine: dict[int, list[float | None]]  # k (in steps) -> per step; None where undefined
    pca: list[tuple[float, float]]
    pca_explained: tuple[float, float]
    rotation_step: int | None
    min_local_cosine: float | None
    candidate_step: int | None  # where the local cosine is lowest, turn or not
    threshold: float
    skipped_ks: list[int] = field(default_factory=list)  # not multiples of the recording interval


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine; NaN where either row is zero."""
    num = (a * b).sum(axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def interval(steps: Sequence[int]) -> int:
    """The recording interval; the analysis needs evenly spaced steps."""
    gaps = {b - a for a, b in pairwise(steps)}
    if len(gaps) != 1 or min(gaps) <= 0:
        raise ValueError(
            f"steps must be increasing and evenly spaced, got gaps {sorted(gaps)}; "
            "pass evenly spaced checkpoints (e.g. every save_steps)"
        )
    return gaps.pop()


def local_cosine(vectors: np.ndarray, offset: int) -> np.ndarray:
    """cos(v[t] - v[t-o], v[t+o] - v[t]) per index t (NaN where t-o or t+o is out of range)."""
    out = np.full(len(vectors), np.nan)
    if len(vectors) > 2 * offset:
        before = vectors[offset:-offset] - vectors[: -2 * offset]
        after = vectors[2 * offset :] - vectors[offset:-offset]
        out[offset:-offset] = _cosine(before, after)
    return out


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The de-meaned vectors projected on their first two principal axes, and the share of
    variance each axis explains."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ axes[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    total = float((singular**2).sum())
    shares = [float(s**2) / total if total > 0 else 0.0 for s in singular[:2]]
    shares += [0.0] * (2 - len(shares))
    return coords, (shares[0], shares[1])


def stack(vectors_by_module: dict[str, np.ndarray]) -> np.ndarray:
    """Several adapters as one vector per step: each module's vectors de-meaned over steps and
    concatenated (the matrix analogue of a single rank-1 B)."""
    parts = [v.reshape(len(v), -1) for _, v in sorted(vectors_by_module.items())]
    return np.concatenate([p - p.mean(axis=0, keepdims=True) for p in parts], axis=1)


def analyse(
    steps: Sequence[int],
    vectors: np.ndarray,
    ks: Sequence[int],
    threshold: float = DEFAULT_THRESHOLD,
) -> Rotation:
    vectors = np.asarray(vectors, dtype=np.float64).reshape(len(steps), -1)
    if len(steps) < 3:
        raise ValueError(f"need at least 3 recorded steps to see a turn, got {len(steps)}")
    every = interval(steps)
    offsets = {k: k // every for k in sorted(set(ks)) if k % every == 0 and k >= every}
    skipped = sorted(set(ks) - set(offsets))
    curves = {k: local_cosine(vectors, o) for k, o in offsets.items()}
    usable = {k: c for k, c in curves.items() if np.isfinite(c).any()}
    rotation_step, lowest, candidate = None, None, None
    if usable:
        table = np.vstack(list(usable.values()))
        # Only steps every offset reaches: at the edges a small offset alone is mostly noise.
        complete = np.isfinite(table).all(axis=0)
        if complete.any():
            mean = np.where(complete, table.mean(axis=0), np.inf)
            index = int(np.argmin(mean))
            lowest, candidate = float(mean[index]), int(steps[index])
            # A turn shows at every offset; noise only at the smallest.
            if float(table[:, index].max()) < threshold:
                rotation_step = int(steps[index])
    final = vectors[-1]
    coords, shares = pca_2d(vectors)
    return Rotation(
        steps=[int(s) for s in steps],
        norm=[float(x) for x in np.linalg.norm(vectors, axis=1)],
        cosine_to_final=[_nan_to_none(x) for x in _cosine(vectors, final[None, :])],
        local_cosine={k: [_nan_to_none(x) for x in c] for k, c in curves.items()},
        pca=[(float(x), float(y)) for x, y in coords],
        pca_explained=shares,
        rotation_step=rotation_step,
        min_local_cosine=lowest,
        candidate_step=candidate,
        threshold=threshold,
        skipped_ks=skipped,
    )


def _nan_to_none(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def peak_step(steps: Sequence[int], values: Sequence[float | None]) -> int | None:
    """The step of the largest value (the gradient-norm peak), ignoring missing values."""
    pairs = [(v, s) for s, v in zip(steps, values, strict=True) if v is not None and np.isfinite(v)]
    return max(pairs)[1] if pairs else None
