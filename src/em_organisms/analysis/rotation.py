"""Where an adapter's direction turns during training: the mechanistic half of the phase transition.

Input: one vector per recorded step (a rank-1 adapter's B or A, or several adapters' vectors
stacked into one, each de-meaned over steps first). Output, all pure numpy:

- the norm of the vector and its cosine to the final vector, per step;
- the local cosine for an offset of k training steps, in the paper's convention (arXiv
  2506.11613, App. F): cos(v[t-k] - v[t], v[t+k] - v[t]), both displacements measured from the
  current point. On a straight path they point opposite ways, so it is -1; where the path turns
  it rises (a peak). Offsets are given in steps (default 5, 10 and 15, as in the paper) and
  mapped onto the recording interval;
- a noise cut: a step counts for offset k only where the larger of its two displacements,
  ||v[t-k] - v[t]|| and ||v[t+k] - v[t]||, exceeds `magnitude_cut` (the paper: 0.0035 for Qwen,
  0.002 for its other models), so a near-still vector's random wobble is not read as a turn.
  Each analysed vector (B, A, or the stacked B's) is cut on its own displacements; the
  upstream code kept a step when either A's or B's displacement passed;
- a 2-D PCA trajectory of the de-meaned vectors;
- the step of maximum rotation: the maximum, over the steps every offset reaches and the cut
  keeps, of the local cosine averaged over the offsets; reported only when the local cosine there
  is above `threshold` for every offset, so noise (which shows at small offsets only) reports none;
- for several adapters, the comp score of the paper's eq. 1, comp(M, M') = ||M^T M'||_F /
  (||M||_F ||M'||_F), between each step's matrix of vectors (one row per adapter, de-meaned over
  steps) and the final step's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from em_organisms import defaults

PAPER_KS = defaults.PHASE_KS
DEFAULT_THRESHOLD = defaults.PHASE_THRESHOLD
CONVENTION = (
    "cos(v[t-k] - v[t], v[t+k] - v[t]) as in arXiv 2506.11613 App. F: -1 on a straight path, "
    "a turn shows as a peak"
)
# The paper's noise cuts on the step size, by model family; none is known for other models.
PAPER_MAGNITUDE_CUTS = {"qwen": 0.0035, "llama": 0.002, "gemma": 0.002}


def default_magnitude_cut(base_model: str | None) -> tuple[float, str]:
    """(cut, why) for a base model's name or Hub id."""
    name = (base_model or "").lower()
    for family, cut in PAPER_MAGNITUDE_CUTS.items():
        if family in name:
            return cut, f"the paper's cut for {family} models"
    return 0.0, "no cut: the paper gives none for this model"


@dataclass(frozen=True)
class Rotation:
    steps: list[int]
    norm: list[float]
    cosine_to_final: list[float]
    local_cosine: dict[
        int, list[float | None]
    ]  # effective k (steps) -> per step; None: not counted
    pca: list[tuple[float, float]]
    pca_explained: tuple[float, float]
    rotation_step: int | None
    peak_local_cosine: float | None
    candidate_step: int | None  # where the local cosine peaks, turn or not
    threshold: float
    magnitude_cut: float = 0.0
    ks: dict[int, int] = field(default_factory=dict)  # k asked (steps) -> k used (steps)
    cut_steps: dict[int, list[int]] = field(default_factory=dict)  # k -> steps below the cut


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


def map_ks(ks: Sequence[int], every: int) -> dict[int, int]:
    """Each offset asked for, in steps, as a whole number of recording intervals (at least
    one), back in steps: what is really used when k is not a multiple of the interval."""
    if any(k < 1 for k in ks):
        raise ValueError(f"offsets k must be at least 1 step, got {sorted(ks)}")
    return {k: max(1, round(k / every)) * every for k in sorted(set(ks))}


def local_cosine(
    vectors: np.ndarray, offset: int, cut: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(cos(v[t-o] - v[t], v[t+o] - v[t]) per index t, mask of indices below the cut). NaN where
    t-o or t+o is out of range, where a displacement is zero, and where both displacements'
    norms are at most CUT."""
    out = np.full(len(vectors), np.nan)
    below = np.zeros(len(vectors), dtype=bool)
    if len(vectors) > 2 * offset:
        here = vectors[offset:-offset]
        before = vectors[: -2 * offset] - here
        after = vectors[2 * offset :] - here
        size = np.maximum(np.linalg.norm(before, axis=-1), np.linalg.norm(after, axis=-1))
        values = _cosine(before, after)
        small = size <= cut if cut > 0 else np.zeros(len(size), dtype=bool)
        out[offset:-offset] = np.where(small, np.nan, values)
        below[offset:-offset] = small
    return out, below


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
    concatenated (the local cosine of the adapters together)."""
    parts = [v.reshape(len(v), -1) for _, v in sorted(vectors_by_module.items())]
    return np.concatenate([p - p.mean(axis=0, keepdims=True) for p in parts], axis=1)


def comp_score(m: np.ndarray, m_prime: np.ndarray) -> float | None:
    """||M^T M'||_F / (||M||_F ||M'||_F) (the paper's eq. 1); None where either is zero.

    Computed as sqrt(trace(M M^T M' M'^T)), which is equal, on the rows x rows Gram matrices:
    M^T M' itself would be dim x dim (5120^2 per step for Qwen2.5-14B's down_proj)."""
    den = float(np.linalg.norm(m) * np.linalg.norm(m_prime))
    if den == 0:
        return None
    cross = float(np.sum((m @ m.T) * (m_prime @ m_prime.T)))  # trace(A B) for symmetric A, B
    return float(np.sqrt(max(cross, 0.0)) / den)


def comp_curve(matrices: np.ndarray) -> list[float | None]:
    """The comp score of each step's matrix (steps, rows, dim) with the final step's, after
    de-meaning every row over the steps."""
    centred = matrices - matrices.mean(axis=0, keepdims=True)
    return [comp_score(m, centred[-1]) for m in centred]


def analyse(
    steps: Sequence[int],
    vectors: np.ndarray,
    ks: Sequence[int] = PAPER_KS,
    threshold: float = DEFAULT_THRESHOLD,
    magnitude_cut: float = 0.0,
) -> Rotation:
    vectors = np.asarray(vectors, dtype=np.float64).reshape(len(steps), -1)
    if len(steps) < 3:
        raise ValueError(f"need at least 3 recorded steps to see a turn, got {len(steps)}")
    every = interval(steps)
    mapped = map_ks(ks, every)
    curves, cut_steps = {}, {}
    for k in sorted(set(mapped.values())):
        curve, below = local_cosine(vectors, k // every, magnitude_cut)
        curves[k] = curve
        cut_steps[k] = [int(s) for s, b in zip(steps, below, strict=True) if b]
    usable = {k: c for k, c in curves.items() if np.isfinite(c).any()}
    rotation_step, peak, candidate = None, None, None
    if usable:
        table = np.vstack(list(usable.values()))
        # Only steps every offset reaches (and the cut keeps): a small offset alone is mostly noise.
        complete = np.isfinite(table).all(axis=0)
        if complete.any():
            mean = np.where(complete, table.mean(axis=0), -np.inf)
            index = int(np.argmax(mean))
            peak, candidate = float(mean[index]), int(steps[index])
            # A turn shows at every offset; noise only at the smallest.
            if float(table[:, index].min()) > threshold:
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
        peak_local_cosine=peak,
        candidate_step=candidate,
        threshold=threshold,
        magnitude_cut=magnitude_cut,
        ks=mapped,
        cut_steps={k: v for k, v in cut_steps.items() if v},
    )


def _nan_to_none(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def peak_step(steps: Sequence[int], values: Sequence[float | None]) -> int | None:
    """The step of the largest value (the gradient-norm peak), ignoring missing values."""
    pairs = [(v, s) for s, v in zip(steps, values, strict=True) if v is not None and np.isfinite(v)]
    return max(pairs)[1] if pairs else None


def rolling_mean(values: Sequence[float | None], window: int) -> list[float | None]:
    """A centred rolling mean over WINDOW neighbours, of the values present (None where none is)."""
    half = window // 2
    out: list[float | None] = []
    for i in range(len(values)):
        near = [v for v in values[max(0, i - half) : i + half + 1] if v is not None]
        out.append(float(np.mean(near)) if near else None)
    return out
