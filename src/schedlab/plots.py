"""Figures shared by the CLI and the report (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_lr_curves(
    curves: Mapping[str, np.ndarray], out: Path, log: bool = False, title: str = "LR schedules"
) -> Path:
    """One line per schedule: the LR the optimizer uses at each step.

    On a log axis a collapsed schedule (an LR orders of magnitude below the base within a few
    hundred steps) is plain to see; zeros are drawn at the axis floor rather than dropped.
    """
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for label, lrs in curves.items():
        values = np.asarray(lrs, dtype=float)
        if log:
            positive = values[values > 0]
            floor = positive.min() if positive.size else 1e-12
            values = np.maximum(values, floor)
        ax.plot(np.arange(len(values)), values, label=label, linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    if log:
        ax.set_yscale("log")
        # Below 1e-9 of the largest LR nothing trains: clip there so the other curves stay legible.
        top = max(float(np.max(v)) for v in curves.values())
        ax.set_ylim(bottom=max(ax.get_ylim()[0], top * 1e-9))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
