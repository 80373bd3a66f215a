"""Figures shared by the CLI and the report (matplotlib, no display needed).

Figures are made as ``matplotlib.figure.Figure`` objects, never through pyplot: drawing one
neither needs a display nor changes the backend of a program that imports schedlab.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from schedlab.files import atomic_file

# Lines are drawn with at most this many points: enough for a figure, and fast to render.
MAX_POINTS = 2000

# Below this fraction of the largest LR nothing trains; log axes stop there so that a collapsed
# schedule drops off the bottom and the other curves stay legible.
LOG_FLOOR = 1e-9


def draw_lr_curves(
    ax: Axes,
    curves: Mapping[str, np.ndarray],
    log: bool = False,
    colors: Mapping[str, str] | None = None,
) -> None:
    """One line per schedule: the LR the optimizer used at each step."""
    top = max((float(np.max(v)) for v in curves.values() if len(v)), default=1.0)
    for label, lrs in curves.items():
        values = np.asarray(lrs, dtype=float)
        if log:
            values = np.maximum(values, top * LOG_FLOOR / 10)
        color = colors.get(label) if colors else None
        stride = max(1, len(values) // MAX_POINTS)
        ax.plot(
            np.arange(len(values))[::stride],
            values[::stride],
            label=label,
            linewidth=1.4,
            color=color,
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(top * LOG_FLOOR, top * 2)
    ax.grid(alpha=0.3)


def plot_lr_curves(
    curves: Mapping[str, np.ndarray], out: Path, log: bool = False, title: str = "LR schedules"
) -> Path:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    draw_lr_curves(ax, curves, log)
    ax.set_title(title)
    ax.legend(fontsize="small")
    with atomic_file(out) as temp:
        fig.savefig(temp, dpi=120, format=out.suffix.lstrip(".") or "png")
    return out
