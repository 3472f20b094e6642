"""Phase transition, behavioural half: the (step, scale) sweep on a tiny model, and the plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.judges import ScriptedJudge
from helpers.models import build_lora_organism

from em_organisms.analysis.plots import plot_mechanics, plot_pca, plot_sweep
from em_organisms.analysis.rotation import Rotation, analyse
from em_organisms.analysis.sweep import SweepError, pick_steps, run_sweep
from em_organisms.analysis.trajectory import ADAPTER_FILE, Trajectory, adapter_weights
from em_organisms.eval.metrics import Proportion
from em_organisms.eval.plan import resolve_plan
from em_organisms.eval.questions import load_project_set
from em_organisms.jsonl import read_jsonl_resumable
from em_organisms.judges import Score

PNG = b"\x89PNG\r\n\x1a\n"


def rotation(turn: int | None, n: int = 30, seed: int = 0) -> Rotation:
    """A synthetic adapter path: unit moves along one direction, then (from TURN) another."""
    rng = np.random.default_rng(seed)
    first, second = np.linalg.qr(rng.normal(size=(16, 2)))[0].T
    moves = np.array([first if turn is None or i < turn else second for i in range(n)])
    vectors = np.cumsum(moves + rng.normal(scale=0.05, size=moves.shape), axis=0)
    return analyse([10 * (i + 1) for i in range(n)], vectors, ks=[10, 20, 40])


def grid(cells: list[tuple[int, float, int, int]]) -> dict:
    """A sweep grid from (step, scale, k, n) cells."""
    return {
        "steps": sorted({c[0] for c in cells} | {300}),  # step 300 has no cell at all
        "scales": sorted({c[1] for c in cells}),
        "judge": "scripted",
        "cells": [
            {"step": s, "scale": x, "em_all_scored": Proportion.of(k, n).to_dict()}
            for s, x, k, n in cells
        ],
    }


def assert_png(path: Path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def test_the_plots_draw_with_and_without_a_rotation_and_gradient(tmp_path: Path) -> None:
    turned, straight = rotation(15), rotation(None)
    assert turned.rotation_step is not None and straight.rotation_step is None
    grad_steps = turned.steps
    grad_norms: list[float | None] = [1.0 + (s == 160) * 5.0 for s in grad_steps]
    grad_norms[3] = None
    mech = plot_mechanics(
        turned, grad_steps, grad_norms, tmp_path / "m1.png", title="layers.2 down_proj"
    )
    plot_mechanics(straight, [], [], tmp_path / "m2.png", title="straight")
    pca = plot_pca(turned, tmp_path / "p1.png", title="turned")
    plot_pca(straight, tmp_path / "p2.png", title="straight")
    full = grid([(s, x, s // 50, 20) for s in (50, 150, 250) for x in (1.0, 5.0)])
    holes = grid([(50, 1.0, 0, 0), (150, 1.0, 3, 10), (150, 5.0, 9, 10)])  # n == 0: n/a
    heat, curves = plot_sweep(full, tmp_path / "h1.png", tmp_path / "c1.png", step_axis=(10, 300))
    plot_sweep(holes, tmp_path / "h2.png", tmp_path / "c2.png", step_axis=None)
    for name in ("m1", "m2", "p1", "p2", "h1", "c1", "h2", "c2"):
        assert_png(tmp_path / f"{name}.png")

    # what the figures show, not only that they exist
    norm_ax, _, local_ax, grad_ax = mech.axes
    assert list(norm_ax.lines[0].get_ydata()) == pytest.approx(turned.norm)
    assert [line.get_label() for line in local_ax.lines[:3]] == ["k=10", "k=20", "k=40"]
    assert local_ax.get_ylim() == (-1.05, 1.05)  # the paper's convention: -1 is straight
    assert max(grad_ax.lines[0].get_ydata()) == 6.0  # the gradient-norm peak is drawn
    assert any(f"rotation at step {turned.rotation_step}" in t.get_text() for t in mech.texts)
    assert "PC1" in pca.axes[0].get_xlabel()
    (ax,) = curves.axes[:1]
    solid = [line for line in ax.lines if line.get_linestyle() == "-"]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert [line.get_label() for line in solid] == ["x1", "x5"]
    # x1's rates are k/20 with k = step // 50: 1/20, 3/20, 5/20; the dashed line is their
    # centred rolling mean over three steps
    assert list(solid[0].get_xdata()) == [50, 150, 250]
    assert list(solid[0].get_ydata()) == pytest.approx([0.05, 0.15, 0.25])
    assert list(dashed[0].get_ydata()) == pytest.approx([0.10, 0.15, 0.20])
    assert ax.get_xlim() == (10, 300)
    shown = np.asarray(heat.axes[0].images[0].get_array(), dtype=float)
    assert shown.shape == (4, 2)  # steps x scales; step 300 has no cell: n/a, not 0
    assert shown[0].tolist() == pytest.approx([0.05, 0.05]) and np.isnan(shown[3]).all()


def test_pick_steps_spreads_evenly_and_keeps_both_ends() -> None:
    available = [5 * (i + 1) for i in range(10)]  # 5 .. 50
    assert pick_steps(available, 4) == [5, 20, 35, 50]
    assert pick_steps(available, 2) == [5, 50]
    assert pick_steps(list(reversed(available)), 10) == available
    assert pick_steps(available, 99) == available
    assert pick_steps(available, 1) == [50]
    for count in range(2, 11):
        picked = pick_steps(available, count)
        assert len(picked) == count and picked[0] == 5 and picked[-1] == 50
    with pytest.raises(SweepError, match="at least 1 step"):
        pick_steps(available, 0)


def test_a_step_without_a_checkpoint_is_refused_with_the_available_ones(tmp_path: Path) -> None:
    trajectory = Trajectory("checkpoints", [5, 10, 15], {}, {5: tmp_path, 15: tmp_path})
    with pytest.raises(SweepError, match=r"step\(s\) \[10\]; steps with one: \[5, 15\]"):
        run_sweep(trajectory, [5, 10], [1.0], _plan(), CountingJudge(), tmp_path)


def _plan(**changes: Any):
    """The project protocol, one sample per general question, and CHANGES (all recorded)."""
    return resolve_plan("project", command_line={"samples_per_question": 1, **changes})


class CountingJudge(ScriptedJudge):
    """Pure logic: every answer misaligned (10) and coherent (90), so every row is EM."""

    def score(self, prompt: str) -> float:
        return 90.0 if "coherence only" in prompt else 10.0


def test_the_sweep_samples_and_judges_every_step_and_scale_on_one_base(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import em_organisms.adapters as adapters

    folders = {
        step: build_lora_organism(tiny_model_dir, tmp_path / f"checkpoint-{step}", seed=step)
        for step in (5, 10, 15)
    }
    per_step = [adapter_weights(folders[s] / ADAPTER_FILE) for s in (5, 10, 15)]
    weights = {k: np.stack([w[k] for w in per_step]) for k in per_step[0]}
    trajectory = Trajectory(
        "checkpoints", [5, 10, 15], weights, folders, base_spec=str(tiny_model_dir)
    )
    loaded: list[Any] = []
    real = adapters.load_base_model

    def counting(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        model, tokenizer = real(*args, **kwargs)
        loaded.append(model)
        return model, tokenizer

    monkeypatch.setattr(adapters, "load_base_model", counting)
    out = tmp_path / "sweep"
    plan = _plan(temperature=0.0, max_new_tokens=4)
    params = plan.params

    def sweep(judge: CountingJudge) -> dict:
        return run_sweep(
            trajectory, [5, 10, 15], [1.0, 5.0], plan, judge, out, device="cpu", progress=False,
        )  # fmt: skip

    judge = CountingJudge()
    result = sweep(judge)
    questions = len(load_project_set("general").questions)
    assert len(loaded) == 1  # one base model for every step and scale
    assert [(c["step"], c["scale"]) for c in result["cells"]] == [
        (s, x) for s in (5, 10, 15) for x in (1.0, 5.0)
    ]
    for cell in result["cells"]:
        assert cell["n_rows"] == cell["n_scored"] == questions
        assert cell["em_all_scored"]["rate"] == 1.0 and cell["em_coherent_only"]["rate"] == 1.0
    assert result["judge"] == "scripted" and result["generation"] == params.to_dict()
    assert result["judge_agreement"] is None  # only a distilled judge has one
    assert result["plan"]["protocol"] == "project" and result["plan"]["sampling"]["n"] == 1
    assert judge.calls == 6 * questions * 2

    # The shared model now holds the last step's adapter, not the first one's it was loaded with.
    state = {n: p.detach().cpu().numpy() for n, p in loaded[0].named_parameters() if "lora_B" in n}
    assert state
    for name, value in state.items():
        key = name.replace(".default.weight", "")
        assert np.allclose(value, weights[key][2]) and not np.allclose(value, weights[key][0])

    answers = {
        x: [r["answer"] for r in read_jsonl_resumable(out / f"step-000010_x{x:g}.samples.jsonl")]
        for x in (1.0, 5.0)
    }
    assert answers[1.0] != answers[5.0]

    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(files) == 12
    again = CountingJudge()
    assert sweep(again) == result
    assert again.calls == 0 and len(loaded) == 2  # the rerun's own single base
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


class DownJudge(ScriptedJudge):
    """Pure logic: every request fails, as an endpoint that is down."""

    def score_prompts(self, prompts: Sequence[str]) -> list[Score]:
        self.calls += len(prompts)
        return [Score(None, "text", None, "", "request failed: connection") for _ in prompts]


def test_a_cell_whose_scores_all_failed_stops_the_sweep_and_a_rerun_asks_again(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from em_organisms.eval.judge_failures import TooManyJudgeFailures

    folder = build_lora_organism(tiny_model_dir, tmp_path / "checkpoint-5", seed=5)
    weights = {k: np.stack([v]) for k, v in adapter_weights(folder / ADAPTER_FILE).items()}
    trajectory = Trajectory("checkpoints", [5], weights, {5: folder}, base_spec=str(tiny_model_dir))
    plan = _plan(temperature=0.0, max_new_tokens=2)
    out = tmp_path / "sweep"

    def sweep(judge: ScriptedJudge) -> dict:
        return run_sweep(trajectory, [5], [1.0], plan, judge, out, device="cpu", progress=False)

    with pytest.raises(
        TooManyJudgeFailures, match=r"judge scores failed .* request failed: connection"
    ):
        sweep(DownJudge())
    judged = out / "step-000005_x1.judged.jsonl"
    assert judged.is_file()  # what the cell has is kept
    back = CountingJudge()
    result = sweep(back)
    assert back.calls > 0 and result["cells"][0]["n_judge_failures"] == 0
