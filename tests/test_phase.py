"""Phase-transition analysis: the rotation detector on synthetic trajectories with a known answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from em_organisms.analysis.rotation import (
    analyse,
    comp_curve,
    comp_score,
    default_magnitude_cut,
    interval,
    local_cosine,
    peak_step,
    rolling_mean,
    stack,
)


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
    assert result.peak_local_cosine is not None and result.peak_local_cosine > -0.3
    assert result.ks == {5: 5, 10: 10, 20: 20}


@pytest.mark.parametrize("turn_step", [150, 180, 240])
def test_the_papers_offsets_find_a_turn_recorded_every_step(turn_step: int) -> None:
    """k = 5, 10, 15 steps on a per-step recording (the paper's phase runs): the turn is where
    the path bends, to the step."""
    steps = list(range(1, 401))
    result = analyse(steps, trajectory(400, turn_step), ks=[5, 10, 15])
    assert result.rotation_step == turn_step
    # a straight path reads -1 in the paper's convention, away from the turn
    assert np.nanmean([v for v in result.local_cosine[10][:100] if v is not None]) < -0.9


def test_offsets_are_mapped_onto_the_recording_interval() -> None:
    steps = [2 * i for i in range(1, 41)]
    result = analyse(steps, trajectory(40, 20), ks=[5, 10, 15])
    assert result.ks == {5: 4, 10: 10, 15: 16}  # whole intervals of 2 steps
    assert set(result.local_cosine) == {4, 10, 16}
    with pytest.raises(ValueError, match="at least 1 step"):
        analyse(steps, trajectory(40, 20), ks=[0])


def test_a_straight_noisy_trajectory_reports_no_rotation() -> None:
    steps = list(range(1, 61))
    for seed in range(5):
        result = analyse(steps, trajectory(60, None, noise=0.2, seed=seed), ks=[1, 3, 6])
        assert result.rotation_step is None  # noise peaks show at k=1 only


def test_the_magnitude_cut_keeps_a_still_vectors_wobble_from_reading_as_a_turn() -> None:
    """A vector that hardly moves for 40 steps (displacements ~1e-4) and then moves straight:
    its wobble points anywhere, so without the cut the wobble's peak is taken for a turn."""
    rng = np.random.default_rng(3)
    still = rng.normal(scale=1e-4, size=(40, 16)).cumsum(axis=0)
    direction = np.linalg.qr(rng.normal(size=(16, 1)))[0][:, 0]
    moving = still[-1] + np.outer(np.arange(1, 41), direction) * 0.01
    vectors = np.vstack([still, moving])
    steps = list(range(1, 81))
    uncut = analyse(steps, vectors, ks=[1, 2, 3])
    assert uncut.rotation_step is not None and uncut.rotation_step < 40
    cut = analyse(steps, vectors, ks=[1, 2, 3], magnitude_cut=0.0035)
    assert cut.rotation_step is None or cut.rotation_step >= 40
    assert all(s < 44 for s in cut.cut_steps[1]) and len(cut.cut_steps[1]) > 30
    assert cut.local_cosine[1][10] is None  # not counted, rather than a number


def test_default_magnitude_cuts_are_the_papers() -> None:
    assert default_magnitude_cut("Qwen/Qwen2.5-14B-Instruct")[0] == 0.0035
    assert default_magnitude_cut("meta-llama/Llama-3.1-8B-Instruct")[0] == 0.002
    assert default_magnitude_cut("google/gemma-3-12b-it")[0] == 0.002
    assert default_magnitude_cut("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        0.0,
        "no cut: the paper gives none for this model",
    )


def test_local_cosine_and_norms_follow_their_definitions() -> None:
    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [2.0, 1.0], [2.0, 2.0]])
    curve, below = local_cosine(vectors, 1)
    assert np.isnan(curve[0]) and np.isnan(curve[-1]) and not below.any()
    # straight: the two displacements from the middle point opposite ways; the corner: at right angles
    assert curve[1:-1].tolist() == pytest.approx([-1.0, 0.0, -1.0])
    result = analyse([1, 2, 3, 4, 5], vectors, ks=[1, 2, 3])
    assert result.norm[1] == pytest.approx(1.0) and result.cosine_to_final[-1] == pytest.approx(1.0)
    assert result.rotation_step == 3  # k=3 reaches no step of five and is left out
    assert result.local_cosine[3] == [None] * 5
    assert sum(result.pca_explained) == pytest.approx(1.0)


def test_the_comp_score_matches_a_hand_computed_example() -> None:
    m = np.array([[1.0, 0.0], [0.0, 1.0]])
    m_prime = np.array([[1.0, 0.0], [1.0, 0.0]])
    # M^T M' = [[1, 0], [1, 0]]: Frobenius sqrt(2); ||M|| = ||M'|| = sqrt(2)
    assert comp_score(m, m_prime) == pytest.approx(np.sqrt(2) / 2)
    assert comp_score(m, np.zeros((2, 2))) is None
    # each row de-meaned over the steps first: the rows' own offsets do not count
    steps = np.array([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 2.0]], [[3.0, 0.0], [0.0, 3.0]]])
    steps = steps + np.array([[[5.0, 5.0], [-5.0, 5.0]]])
    # de-meaned: -I, 0, I; comp(-I, I) = ||-I||_F / 2 = sqrt(2) / 2; the middle step is zero
    assert comp_curve(steps) == [pytest.approx(np.sqrt(2) / 2), None, pytest.approx(np.sqrt(2) / 2)]


def test_rolling_mean_is_centred_and_skips_gaps() -> None:
    assert rolling_mean([0.0, 0.3, 0.6, None, 0.9], 3) == pytest.approx(
        [0.15, 0.3, 0.45, 0.75, 0.9]
    )
    assert rolling_mean([None, None], 3) == [None, None]


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
        "rotation_step": None, "primary": "m", "peak_local_cosine": -0.9, "threshold": -0.5,
        "ks": [1], "ks_used": {1: 1}, "candidate_step": None, "grad_norm_peak_step": None,
        "plots": [], "local_cosine_convention": "paper", "magnitude_cut": 0.0,
        "magnitude_cut_source": "given",
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


def test_a_full_fine_tune_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from em_organisms.cli import main

    run = tmp_path / "full-sft"
    for folder in (run, run / "checkpoint-5", run / "checkpoint-10"):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"not read")
    assert main(["phase", str(run), "--out", str(tmp_path / "out"), "--no-sweep"]) == 2
    err = capsys.readouterr().err
    assert "a full fine-tune" in err and "weight delta is not implemented" in err
    assert not (tmp_path / "out" / "phase.json").exists()


def test_phase_on_a_recorded_two_adapter_run_reports_b_a_and_the_comp_score(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import json

    from helpers.data import chat_rows, tiny_recipe_dict, write_jsonl

    from em_organisms.cli import main
    from em_organisms.recipes import parse_recipe
    from em_organisms.train.runner import train

    data = write_jsonl(tmp_path / "data.jsonl", chat_rows(48))
    recipe = tiny_recipe_dict(tiny_model_dir, data, max_steps=12, record_adapter_every=1)
    recipe["protocol"]["layers"] = [1, 2]
    run = train(parse_recipe(recipe), output_dir=tmp_path / "run", device="cpu").output_dir
    out = tmp_path / "phase"
    argv = ["phase", str(run), "--out", str(out), "--no-sweep", "--k", "2", "--k", "3"]
    assert main(argv) == 0
    result = json.loads((out / "phase.json").read_text())
    assert result["ks_used"] == {"2": 2, "3": 3}
    # the base is named em-organisms-tests/tiny-llama: the paper's cut for Llama models
    assert result["magnitude_cut"] == 0.002 and "llama" in result["magnitude_cut_source"]
    assert result["local_cosine_convention"].startswith("cos(v[t-k] - v[t], v[t+k] - v[t])")
    modules = result["trajectory"]["modules"]
    assert len(modules) == 2 and set(result["rotations_a"]) == set(modules)
    # the comp score, recomputed by brute force from the recording: one row per adapter
    from em_organisms.analysis.trajectory import load_run

    trajectory = load_run(run)
    rows = np.stack([trajectory.b_vectors(m) for m in sorted(modules)], axis=1)  # steps x 2 x d
    rows = rows - rows.mean(axis=0)
    expected = []
    for t in range(len(rows)):
        cross = sum(
            (sum(rows[t][i][a] * rows[-1][i][b] for i in range(2))) ** 2
            for a in range(rows.shape[2])
            for b in range(rows.shape[2])
        )
        norms = np.sqrt((rows[t] ** 2).sum()) * np.sqrt((rows[-1] ** 2).sum())
        expected.append(np.sqrt(cross) / norms)
    (curve,) = result["comp_score"]["curves"].values()
    assert curve == pytest.approx(expected)
    assert {"comp_score.png", f"mechanics_A_{modules[0].replace('.', '_')}.png"} <= {
        p.name for p in out.iterdir()
    }
