"""Matplotlib figures drawn on Agg, without touching pyplot's global backend (a Space or a
notebook keeps its own): every report's plots start here."""

from __future__ import annotations

from typing import Any


def figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig
