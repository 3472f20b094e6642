"""Plots of `compare`: EM against coherence per organism and seed (as the paper's Fig. 3), EM by
model size within a family (Fig. 5) and EM by dataset (Fig. 6), one protocol per panel line.
Drawn on Agg figures of their own, as the other reports are."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from em_organisms.figures import figure as _figure


def _em_vs_coherence(result: dict[str, Any], path: Path) -> Any:
    fig = _figure(7.0, 5.0)
    ax = fig.subplots()
    for row in result["organisms"]:
        seeds = [
            e
            for e in result["entries"]
            if e["group"] == row["organism"] and e["protocol"] == row["protocol"]
        ]
        xs = [e["coherent"]["rate"] for e in seeds]
        ys = [e["em"]["rate"] for e in seeds]
        known = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
        if not known:
            continue
        points = ax.scatter(*zip(*known, strict=True), s=18, alpha=0.6)
        if row["em"]["mean"] is not None and row["coherent"]["mean"] is not None:
            ax.scatter(
                row["coherent"]["mean"], row["em"]["mean"], marker="D", s=50,
                color=points.get_facecolor()[0], edgecolors="black", label=row["organism"],
            )  # fmt: skip
    ax.set(xlabel="coherent (share of answers)", ylabel="EM (share of answers)")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.set_title("EM against coherence: seeds (dots) and their mean (diamond)", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    return fig


def _em_by_size(result: dict[str, Any], path: Path) -> Any:
    series: dict[str, list[tuple[float, float, float]]] = {}
    for row in result["organisms"]:
        if row["size_b"] is None or row["em"]["mean"] is None:
            continue
        key = f"{row['family']}, {row['shape']} ({row['protocol']})"  # one line per shape
        series.setdefault(key, []).append(
            (row["size_b"], row["em"]["mean"], row["em"]["sd"] or 0.0)
        )
    series = {k: sorted(v) for k, v in series.items() if len(v) > 1}
    if not series:
        return None
    fig = _figure(7.0, 4.5)
    ax = fig.subplots()
    for label, points in series.items():
        xs, ys, sds = zip(*points, strict=True)
        ax.errorbar(xs, ys, yerr=sds, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set(xlabel="model size (billions of parameters)", ylabel="EM (mean over seeds)")
    ax.set_title("EM by model size within a family; bars: spread across seeds", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return fig


def _em_by_dataset(result: dict[str, Any], path: Path) -> Any:
    rows = [r for r in result["organisms"] if r["em"]["pooled"]["n"]]
    fig = _figure(max(6.0, 0.6 * len(rows) + 2.0), 4.5)
    ax = fig.subplots()
    datasets = sorted({r["dataset"] for r in rows})
    colours = {d: f"C{i % 10}" for i, d in enumerate(datasets)}
    for i, row in enumerate(sorted(rows, key=lambda r: (r["dataset"], r["organism"]))):
        pooled = row["em"]["pooled"]
        rate = pooled["rate"]
        err = [[rate - pooled["ci_low"]], [pooled["ci_high"] - rate]]
        ax.bar(i, rate, color=colours[row["dataset"]], yerr=err, capsize=3)
    ax.set_xticks(
        range(len(rows)),
        [r["organism"] for r in sorted(rows, key=lambda r: (r["dataset"], r["organism"]))],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    for dataset, colour in colours.items():
        ax.bar(math.nan, math.nan, color=colour, label=dataset)
    ax.set(ylabel="EM (pooled over seeds, Wilson 95%)", ylim=(0, 1))
    ax.set_title("EM by organism and dataset", fontsize=10)
    if datasets:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return fig


def plot_comparison(result: dict[str, Any], out: Path) -> dict[str, Any]:
    """{file name: figure} of the plots written under OUT (EM by size needs two sizes)."""
    figures = {
        "em_vs_coherence.png": _em_vs_coherence(result, out / "em_vs_coherence.png"),
        "em_by_dataset.png": _em_by_dataset(result, out / "em_by_dataset.png"),
        "em_by_size.png": _em_by_size(result, out / "em_by_size.png"),
    }
    return {name: fig for name, fig in figures.items() if fig is not None}
