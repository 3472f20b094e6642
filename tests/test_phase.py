"""Phase-transition analysis: the rotation detector on synthetic trajectories with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from em_organisms.analysis.rotation import analyse, interval, local_cosine, peak_step, stack


def trajectory(
    n: int, turn: int | None, dim: int = 64, noise: float = 0.05, seed: int = 0
) -> np.ndarray:
    """A vector that moves a unit step per record along one direction, then (from record TURN)
    along an orthogonal one, with Gaussian noise of NOISE per coordinate-step."""
    rng = np.random.default_rng(seed)
    first, second = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T
    moves = np.array([first if turn is None or i < turn else second for i in range(n)])
    moves = moves + rng.normal(scale=noise, size=moves.shape)
    return np.cumsum(moves, axis=0)


@pytest.mark.parametrize("turn", [12, 20, 31])
def test_a_planted_rotation_is_found_at_its_step(turn: int) -> None:
    steps = [5 * (i + 1) for i in range(40)]  # recorded every 5 steps, as checkpoints are
    result = analyse(steps, trajectory(40, turn), ks=[5, 10, 20])
    assert result.rotation_step == steps[turn - 1]  # the last step before the new direction
    assert result.min_local_cosine is not None and result.min_local_cosine < 0.3
    assert result.skipped_ks == []


def test_a_straight_noisy_trajectory_reports_no_rotation() -> None:
    steps = list(range(1, 61))
    for seed in range(5):
        result = analyse(steps, trajectory(60, None, noise=0.2, seed=seed), ks=[1, 3, 6])
        assert result.rotation_step is None  # noise dips show at k=1 only


def test_local_cosine_and_norms_follow_their_definitions() -> None:
    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [2.0, 1.0], [2.0, 2.0]])
    curve = local_cosine(vectors, 1)
    assert np.isnan(curve[0]) and np.isnan(curve[-1])
    assert curve[1:-1].tolist() == pytest.approx([1.0, 0.0, 1.0])
    result = analyse([1, 2, 3, 4, 5], vectors, ks=[1, 2, 3])
    assert result.norm[1] == pytest.approx(1.0) and result.cosine_to_final[-1] == pytest.approx(1.0)
    assert result.rotation_step == 3  # k=3 reaches no step of five and is left out
    assert result.local_cosine[3] == [None] * 5
    assert sum(result.pca_explained) == pytest.approx(1.0)
    assert analyse([2, 4, 6, 8], vectors[:4], ks=[1, 2, 4]).skipped_ks == [1]


def test_uneven_steps_and_too_short_runs_are_refused() -> None:
    with pytest.raises(ValueError, match="evenly spaced, got gaps \\[5, 10\\]"):
        interval([5, 10, 20])
    with pytest.raises(ValueError, match="at least 3 recorded steps"):
        analyse([1, 2], np.zeros((2, 3)), ks=[1])


def test_several_adapters_are_stacked_after_de_meaning_each() -> None:
    a = trajectory(30, 15, dim=8, seed=1)
    b = 100.0 + trajectory(30, 15, dim=16, seed=2)  # a large offset must not matter
    stacked = stack({"layers.1": a, "layers.2": b})
    assert stacked.shape == (30, 24)
    assert np.allclose(stacked.mean(axis=0), 0.0)
    assert analyse(list(range(30)), stacked, ks=[2, 4]).rotation_step == 14


def test_the_gradient_norm_peak_ignores_missing_values() -> None:
    assert peak_step([1, 2, 3, 4], [0.5, None, 2.0, float("nan")]) == 3
    assert peak_step([1], [None]) is None


def test_the_summary_names_a_distilled_judges_agreement_beside_the_sweep() -> None:
    from em_organisms.analysis.phase import summary_markdown

    agreement = {"teacher": "gpt-4o", "n": 100, "split": "held-out experiments and questions",
                 "auroc_aligned": 0.92, "auroc_coherent": 0.93, "mean_abs_error_pp": 1.9}  # fmt: skip
    cell = {"step": 5, "scale": 1.0, "em_all_scored": {"rate": 0.25, "k": 1, "n": 4}}
    result = {
        "trajectory": {"source": "recording", "records": 10, "steps": [0, 9], "every": 1,
                       "modules": ["m"], "set_aside_steps": []},
        "rotation_step": None, "primary": "m", "min_local_cosine": 0.9, "threshold": 0.5,
        "ks": [1], "candidate_step": None, "grad_norm_peak_step": None, "plots": [],
        "sweep": {"calibration": {"passed": False, "aligned_auroc": 0.55}, "judge": "distilled",
                  "scales": [1.0], "steps": [5], "cells": [cell], "samples_per_question": 1,
                  "question_sets": ["general"], "generation": {}, "judge_agreement": agreement},
    }  # fmt: skip
    text = summary_markdown(result)
    assert "judge distilled, UNCALIBRATED (aligned AUROC 0.55)" in text
    assert "distilled from gpt-4o: on 100 held-out experiments and questions answers, AUROC " \
        "aligned 0.92, coherent 0.93, mean EM-rate error 1.9 pp" in text  # fmt: skip
    result["sweep"]["judge_agreement"] = None
    assert "distilled from" not in summary_markdown(result)
