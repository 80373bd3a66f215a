"""The report's figures (PNG and SVG): samples, loss and LR curves, KL with intervals, and the
held-out curves time-to-target reads."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter
from scipy.signal.windows import hann

from schedlab.report.data import StudyView
from schedlab.report.plots import draw_lr_curves
from schedlab.report.stats import summarize
from schedlab.store.status import FINISHED
from schedlab.store.store import Store

SMOOTH = 25  # the reference smooths loss curves with a 25-step Hann window
TITLE_MARGIN_IN = 0.4  # inches either side of a title, together
LIMIT = 5.0  # sample plots show [-5, 5]^2, the range of every dataset


def colors(view: StudyView) -> dict[str, str]:
    cycle = [f"C{i}" for i in range(10)]
    return {label: cycle[i % 10] for i, label in enumerate(view.labels)}


def smooth(values: np.ndarray, width: int = SMOOTH) -> np.ndarray:
    if len(values) < width:
        return values
    window = hann(width)
    return np.convolve(values, window / window.sum(), mode="valid")


def save(fig: Figure, out_dir: Path, stem: str, title: str) -> Path:
    """Write ``fig`` titled ``title`` as PNG and SVG, widened first when the title is wider
    than the figure (one dataset's panel, say), so that no title is cut off."""
    text = fig.suptitle(title)
    renderer = FigureCanvasAgg(fig).get_renderer()
    needed = text.get_window_extent(renderer).width / fig.dpi + TITLE_MARGIN_IN
    if needed > fig.get_figwidth():
        fig.set_figwidth(needed)
    png = out_dir / f"{stem}.png"
    fig.savefig(png, dpi=110)
    fig.savefig(out_dir / f"{stem}.svg")
    return png


def first_seed_run(view: StudyView, label: str, dataset: str) -> str | None:
    runs = sorted(
        (r.seed, r.run_id) for r in view.finished() if r.label == label and r.dataset == dataset
    )
    return runs[0][1] if runs else None


def panels(n: int, height: float = 3.0, width: float = 3.6) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * n, height), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    return fig, list(axes)


GRID = 4  # image samples are shown as a GRID x GRID mosaic


def image_grid(images: np.ndarray) -> np.ndarray:
    """The first GRID^2 images [n, C, H, W] as one mosaic [GRID H, GRID W] (or with 3
    channels [.., .., 3]), each image scaled to [0, 1] by the samples' common range, 1-pixel
    borders between them."""
    count, channels, height, width = images.shape
    shown = np.zeros((GRID * GRID, channels, height, width))
    shown[: min(count, GRID * GRID)] = images[: GRID * GRID]
    low, high = np.nanmin(shown), np.nanmax(shown)
    shown = (shown - low) / (high - low) if high > low else np.zeros_like(shown)
    padded = np.pad(shown, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=1.0)
    mosaic = padded.reshape(GRID, GRID, channels, height + 1, width + 1)
    mosaic = mosaic.transpose(0, 3, 1, 4, 2).reshape(GRID * (height + 1), GRID * (width + 1), -1)
    return mosaic[..., 0] if channels != 3 else mosaic


def samples_figure(view: StudyView, store: Store, out_dir: Path) -> Path:
    rows, cols = len(view.labels), len(view.datasets)
    # Wide enough for its title whatever the number of datasets.
    fig = Figure(figsize=(max(2.4 * cols, 5.0), 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, label in enumerate(view.labels):
        for j, dataset in enumerate(view.datasets):
            ax = axes[i][j]
            run_id = first_seed_run(view, label, dataset)
            stored = store.samples(run_id, view.sample_key) if run_id else None
            points = stored[0] if stored is not None else None
            if points is not None and points.ndim == 4:
                ax.imshow(image_grid(points), cmap="gray", interpolation="nearest")
                ax.set_xlabel(f"first {GRID**2} samples", fontsize="small")
            elif points is not None:
                # Points of more than two values are shown by their first two.
                points = points.reshape(len(points), -1)
                ax.scatter(
                    points[:, 0], points[:, 1], s=0.3, alpha=0.4, color="C0", rasterized=True
                )
                if points.shape[1] > 2:
                    ax.set_xlabel(f"x0, x1 of {points.shape[1]} coordinates", fontsize="small")
            else:
                ax.text(0, 0, "no samples", ha="center", va="center", color="grey")
            if points is None or points.ndim != 4:
                ax.set(xlim=(-LIMIT, LIMIT), ylim=(-LIMIT, LIMIT))
            ax.set(xticks=[], yticks=[])
            ax.set_aspect("equal")
            if i == 0:
                ax.set_title(dataset)
            if j == 0:
                ax.set_ylabel(view.display(label))
    return save(fig, out_dir, "samples", "Generated samples (EMA weights, lowest seed)")


def curve_figure(view: StudyView, store: Store, out_dir: Path, which: str) -> Path:
    """Training loss (smoothed, mean over seeds) or LR (every seed) per dataset."""
    fig, axes = panels(len(view.datasets))
    palette = colors(view)
    for ax, dataset in zip(axes, view.datasets, strict=True):
        per_label: dict[str, list[np.ndarray]] = {}
        for record in view.records:
            curves = (
                store.curves(record.run_id)
                if record.dataset == dataset and record.status in FINISHED
                else None
            )
            if curves is not None:
                per_label.setdefault(record.label, []).append(curves[0 if which == "loss" else 1])
        if which == "loss":
            for label, losses in per_label.items():
                smoothed = [smooth(x) for x in losses if np.all(np.isfinite(x))]
                if smoothed:
                    length = min(len(x) for x in smoothed)
                    mean = np.mean([x[:length] for x in smoothed], axis=0)
                    ax.plot(
                        np.arange(length) + SMOOTH // 2,
                        mean,
                        label=view.display(label),
                        color=palette[label],
                        linewidth=1.2,
                    )
            ax.set(xlabel="optimizer step", ylabel="training loss (smoothed)")
            ax.grid(alpha=0.3)
        else:
            draw_lr_curves(
                ax, {label: lrs[0] for label, lrs in per_label.items()}, log=True, colors=palette
            )
        ax.set_title(dataset)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    title = (
        "Training loss, 25-step Hann window, mean over seeds"
        if which == "loss"
        else "Learning rate used at each step (log scale, lowest seed)"
    )
    return save(fig, out_dir, which, title)


def kl_figure(view: StudyView, out_dir: Path) -> Path:
    fig, axes = panels(len(view.datasets), height=3.4)
    palette = colors(view)
    for ax, dataset in zip(axes, view.datasets, strict=True):
        for x, label in enumerate(view.labels):
            s = summarize(list(view.values(label, dataset, "kl_divergence").values()))
            if s.n == 0:
                continue
            if math.isfinite(s.ci_low):
                ax.errorbar(
                    [x],
                    [s.mean],
                    yerr=[[s.mean - s.ci_low], [s.ci_high - s.mean]],
                    fmt="o",
                    color=palette[label],
                    capsize=4,
                )
            else:
                ax.plot([x], [s.mean], "o", color=palette[label])
        floor = view.floor("kl_divergence", dataset)
        if math.isfinite(floor):
            ax.axhline(floor, color="grey", linestyle="--", linewidth=1, label="bias floor")
        names = [view.display(label) for label in view.labels]
        ax.set_xticks(range(len(view.labels)), names, rotation=45, ha="right")
        ax.set(title=dataset, ylabel="KL (bits), mean and 95% t interval")
        ax.grid(alpha=0.3, axis="y")
    return save(
        fig, out_dir, "kl", "KL divergence per dataset (dashed: the estimator's bias floor)"
    )


def heldout_figure(view: StudyView, store: Store, out_dir: Path) -> Path:
    """Held-out EMA loss curves per dataset: median over seeds, band from the lowest to the
    highest seed, and the dataset's target (dashed)."""
    curves = store.heldout_curves(r.run_id for r in view.finished())
    fig, axes = panels(len(view.datasets), height=3.4)
    palette = colors(view)
    legend: dict[str, object] = {}
    for ax, dataset in zip(axes, view.datasets, strict=True):
        drawn = False
        for label in view.labels:
            runs = [
                curves[r.run_id]
                for r in view.finished()
                if r.label == label and r.dataset == dataset and r.run_id in curves
            ]
            if not runs:
                continue
            length = min(len(c) for c in runs)
            steps = runs[0][:length, 0]
            losses = np.array([c[:length, 1] for c in runs])
            (line,) = ax.plot(steps, np.median(losses, axis=0), color=palette[label])
            legend.setdefault(view.display(label), line)
            drawn = True
            if len(runs) > 1:
                low, high = losses.min(axis=0), losses.max(axis=0)
                ax.fill_between(steps, low, high, color=palette[label], alpha=0.2)
        ax.set(title=dataset, xlabel="optimizer step", ylabel="held-out loss, EMA weights")
        if not drawn:
            ax.text(
                0.5,
                0.5,
                "no held-out curves recorded",
                ha="center",
                va="center",
                color="grey",
                transform=ax.transAxes,
            )
            continue
        target = view.targets.get(dataset, math.nan)
        if math.isfinite(target):
            legend["target"] = ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis(FormatStrFormatter("%.3g"))  # plain numbers, not 8.5 x 10^-1
        ax.grid(alpha=0.3)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize="small")
    return save(
        fig, out_dir, "heldout", "Held-out EMA loss while training (median, band over seeds)"
    )


FIGURES: dict[str, Callable[[StudyView, Store, Path], Path]] = {
    "samples": samples_figure,
    "loss": lambda v, s, o: curve_figure(v, s, o, "loss"),
    "lr": lambda v, s, o: curve_figure(v, s, o, "lr"),
    "kl": lambda v, s, o: kl_figure(v, o),
    "heldout": heldout_figure,
}
