"""Exact and near-duplicate detection for generated rows.

Exact: the same conversation after normalising case, whitespace and punctuation. Near: MinHash
over word 3-gram shingles with LSH banding to find candidates, then the true Jaccard similarity
of the shingle sets decides (so a hash collision never removes a row on its own).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_WORD = re.compile(r"[a-z0-9']+")
_MERSENNE = (1 << 61) - 1


def normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def exact_key(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()


def shingles(text: str, size: int = 3) -> set[str]:
    words = normalize(text).split()
    if len(words) < size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NearDuplicateIndex:
    """Finds an earlier text whose shingle Jaccard similarity is at least `threshold`."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 64, bands: int = 16) -> None:
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.threshold = threshold
        self.bands = bands
        self.rows_per_band = num_perm // bands
        rng = np.random.default_rng(20240611)
        self._a = rng.integers(1, _MERSENNE, size=num_perm, dtype=np.uint64)
        self._b = rng.integers(0, _MERSENNE, size=num_perm, dtype=np.uint64)
        self._buckets: list[dict[bytes, list[str]]] = [{} for _ in range(bands)]
        self._shingles: dict[str, set[str]] = {}

    def _signature(self, grams: set[str]) -> np.ndarray:
        hashes = np.array(
            [int.from_bytes(hashlib.blake2b(g.encode(), digest_size=7).digest()) for g in grams]
            or [0],
            dtype=np.uint64,
        )
        # (a * x + b) mod p with wrap-around uint64 arithmetic: a cheap universal hash family.
        mixed = (self._a[:, None] * hashes[None, :] + self._b[:, None]) % np.uint64(_MERSENNE)
        return mixed.min(axis=1)

    def find(self, text: str) -> tuple[str, float] | None:
        """The most similar indexed key at or above the threshold, with its similarity."""
        grams = shingles(text)
        signature = self._signature(grams)
        candidates: set[str] = set()
        for band, buckets in enumerate(self._buckets):
            piece = signature[band * self.rows_per_band : (band + 1) * self.rows_per_band]
            candidates.update(buckets.get(piece.tobytes(), ()))
        best: tuple[str, float] | None = None
        for key in sorted(candidates):
            score = jaccard(grams, self._shingles[key])
            if score >= self.threshold and (best is None or score > best[1]):
                best = (key, score)
        return best

    def add(self, key: str, text: str) -> None:
        grams = shingles(text)
        self._shingles[key] = grams
        signature = self._signature(grams)
        for band, buckets in enumerate(self._buckets):
            piece = signature[band * self.rows_per_band : (band + 1) * self.rows_per_band]
            buckets.setdefault(piece.tobytes(), []).append(key)
