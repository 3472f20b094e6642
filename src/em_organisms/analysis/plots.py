"""Plots of the phase transition: the adapter's mechanics over training, its PCA path, and the
EM rate over (step, scale). Drawn on Agg figures of their own (as eval/report.py does), so
pyplot's global backend and figure list are never touched and nothing is left open."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from em_organisms.analysis.rotation import Rotation, peak_step, rolling_mean

CONVENTION = "em_all_scored"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _values(values: Sequence[float | None]) -> list[float]:
    """Missing values as NaN, which matplotlib leaves as gaps."""
    return [math.nan if v is None else float(v) for v in values]


def plot_mechanics(
    rotation: Rotation,
    grad_steps: Sequence[int],
    grad_norms: Sequence[float | None],
    path: Path,
    title: str = "",
    which: str = "B",
) -> Any:
    """The vector's norm, cosine to final, local cosine per k (the paper's convention: -1 on a
    straight path, a turn is a peak) and gradient norm over one step axis."""
    has_grad = any(v is not None and math.isfinite(v) for v in grad_norms)
    panels = 4 if has_grad else 3
    fig = _figure(8.0, 2.2 * panels + 0.6)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    steps = rotation.steps
    axes[0].plot(steps, rotation.norm, color="tab:blue")
    axes[0].set_ylabel(f"{which} norm")
    axes[1].plot(steps, _values(rotation.cosine_to_final), color="tab:green")
    axes[1].set_ylabel("cos to final")
    for k, curve in sorted(rotation.local_cosine.items()):
        axes[2].plot(steps, _values(curve), marker="o", ms=3, label=f"k={k}")
    axes[2].axhline(rotation.threshold, ls="--", color="gray", lw=1, label="threshold")
    axes[2].set_ylabel("local cosine\n(-1 = straight)")
    axes[2].set_ylim(-1.05, 1.05)
    axes[2].legend(fontsize=7, loc="upper left")
    peak = peak_step(grad_steps, grad_norms) if has_grad else None
    if has_grad:
        axes[3].plot(list(grad_steps), _values(grad_norms), color="tab:orange")
        axes[3].set_ylabel("grad norm")
    for ax in axes:
        if rotation.rotation_step is not None:
            ax.axvline(rotation.rotation_step, color="tab:red", lw=1, alpha=0.7)
        if peak is not None:
            ax.axvline(peak, color="tab:orange", lw=1, ls=":", alpha=0.9)
    axes[-1].set_xlabel("training step")
    rotated = rotation.rotation_step is not None
    marks = [f"rotation at step {rotation.rotation_step}" if rotated else ""]
    marks.append(f"grad-norm peak at step {peak}" if peak is not None else "")
    note = "; ".join(m for m in marks if m) or "no rotation found"
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return fig


def plot_pca(rotation: Rotation, path: Path, title: str = "") -> Any:
    """The adapter's path in its first two principal components, coloured by step."""
    fig = _figure(6.0, 5.0)
    ax = fig.subplots()
    xs = [p[0] for p in rotation.pca]
    ys = [p[1] for p in rotation.pca]
    ax.plot(xs, ys, color="lightgray", lw=1, zorder=1)
    points = ax.scatter(xs, ys, c=rotation.steps, cmap="viridis", s=18, zorder=2)
    fig.colorbar(points, ax=ax, label="training step")
    for index, marker, name in ((0, "o", "start"), (-1, "s", "end")):
        ax.scatter(
            xs[index], ys[index], marker=marker, s=90, facecolors="none", edgecolors="black",
            zorder=3, label=f"{name} (step {rotation.steps[index]})",
        )  # fmt: skip
    if rotation.rotation_step is not None:
        i = rotation.steps.index(rotation.rotation_step)
        ax.scatter(
            xs[i],
            ys[i],
            marker="*",
            s=200,
            color="tab:red",
            zorder=4,
            label=f"rotation (step {rotation.rotation_step})",
        )
    first, second = rotation.pca_explained
    ax.set_xlabel(f"PC1 ({100 * first:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * second:.1f}% of variance)")
    ax.legend(fontsize=8)
    ax.set_title(title or "adapter trajectory (PCA)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return fig


def plot_comp(steps: Sequence[int], curves: dict[str, list[float | None]], path: Path) -> Any:
    """The comp score (the paper's eq. 1) of each step's adapters with the final step's."""
    fig = _figure(8.0, 3.4)
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.plot(list(steps), _values(curve), marker="o", ms=3, label=name)
    ax.set(xlabel="training step", ylabel="comp score with the final step", ylim=(-0.02, 1.02))
    ax.set_title(
        "||M^T M'||_F / (||M||_F ||M'||_F), de-meaned (arXiv 2506.11613 eq. 1)", fontsize=10
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return fig


def _cell(grid: dict[str, Any], step: int, scale: float) -> dict[str, Any] | None:
    for cell in grid["cells"]:
        if cell["step"] == step and cell["scale"] == scale:
            return cell[grid.get("counting", CONVENTION)]  # type: ignore[no-any-return]
    return None


def plot_sweep(
    grid: dict[str, Any],
    path_heatmap: Path,
    path_curves: Path,
    step_axis: tuple[int, int] | None = None,
) -> tuple[Any, Any]:
    """(heatmap figure, curves figure): a heatmap of the EM rate (steps x scales) and the rate
    against step, one line per scale with Wilson 95% bands and its rolling mean (dashed);
    STEP_AXIS sets the curves' x limits to match the mechanics plot."""
    steps, scales = list(grid["steps"]), list(grid["scales"])
    table = [[_cell(grid, s, x) for x in scales] for s in steps]
    rates = [[math.nan if c is None or c["rate"] is None else c["rate"] for c in r] for r in table]

    fig = _figure(1.4 * len(scales) + 3.0, 0.45 * len(steps) + 2.0)
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Reds", vmin=0.0, vmax=1.0, aspect="auto")
    counting = grid.get("counting", CONVENTION)
    fig.colorbar(image, ax=ax, label=f"EM rate ({counting})")
    for i, row in enumerate(rates):
        for j, rate in enumerate(row):
            text = "n/a" if math.isnan(rate) else f"{rate:.2f}"
            colour = "white" if not math.isnan(rate) and rate > 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(scales)), [f"x{x:g}" for x in scales])
    ax.set_yticks(range(len(steps)), [str(s) for s in steps])
    ax.set(xlabel="adapter scale", ylabel="training step")
    ax.set_title(f"EM rate by step and scale (judge {grid.get('judge', '?')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path_heatmap)
    heatmap = fig

    fig = _figure(8.0, 3.6)
    ax = fig.subplots()
    for j, scale in enumerate(scales):
        known = [(s, r[j]) for s, r in zip(steps, table, strict=True) if r[j] and r[j]["n"]]
        if not known:
            continue
        xs = [s for s, _ in known]
        line = ax.plot(xs, [c["rate"] for _, c in known], marker="o", ms=3, label=f"x{scale:g}")
        ax.fill_between(
            xs,
            [c["ci_low"] for _, c in known],
            [c["ci_high"] for _, c in known],
            color=line[0].get_color(),
            alpha=0.2,
            lw=0,
        )
        smooth = rolling_mean([c["rate"] for _, c in known], grid.get("rolling_window", 3))
        ax.plot(xs, _values(smooth), ls="--", lw=1.5, color=line[0].get_color())
    if step_axis is not None:
        ax.set_xlim(*step_axis)
    ax.set(
        xlabel="training step",
        ylabel=f"EM rate ({grid.get('counting', CONVENTION)})",
        ylim=(-0.02, 1.02),
    )
    window = grid.get("rolling_window", 3)
    ax.set_title(
        f"EM rate over training, Wilson 95% bands; dashed: rolling mean over {window} steps",
        fontsize=10,
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title="scale", fontsize=8)
    else:  # an empty frame would look like a rate of nothing
        ax.text(
            0.5, 0.5, "no scored answers: the judge gave no score to any of them",
            ha="center", va="center", transform=ax.transAxes, color="gray",
        )  # fmt: skip
    fig.tight_layout()
    fig.savefig(path_curves)
    return heatmap, fig
