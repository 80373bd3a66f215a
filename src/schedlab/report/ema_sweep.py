"""The report's post-hoc EMA section: each metric against the EMA length, the best length per
schedule, each schedule at its best length against the baseline at its best (paired), and
the answer to the question the sweep exists for: with its best averaging, does a constant LR
match the decayed schedules?
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from schedlab.config.settings import EvalSettings, TrainSettings
from schedlab.metrics import METRICS, averaged
from schedlab.report.data import StudyView
from schedlab.report.figures import colors, save
from schedlab.report.html import esc, fmt, image, table
from schedlab.report.stats import INTERVAL, Paired, paired_comparison, summarize
from schedlab.store.records import RunRecord
from schedlab.store.store import Store

# label -> dataset -> seed -> EMA std -> value, for one metric
Sweep = dict[str, dict[str, dict[int, dict[float, float]]]]


@dataclass(frozen=True)
class Best:
    std: float  # the EMA length whose mean over seeds is lowest
    values: dict[int, float]  # seed -> the metric at that length


def load_sweeps(view: StudyView, store: Store) -> dict[str, Sweep]:
    """metric -> its sweep, for the metrics measured under the study's eval settings."""
    settings = EvalSettings.model_validate(view.spec.get("eval", {}))
    keys = {m.key: m.key_for(settings) for m in averaged()}
    labelled: dict[str, list[RunRecord]] = {}  # a run under each of its labels
    for record in view.finished():
        labelled.setdefault(record.run_id, []).append(record)
    out: dict[str, Sweep] = {}
    for run_id, std, metric, mkey, value in store.sweep(labelled):
        if keys.get(metric) != mkey:
            continue
        for record in labelled[run_id]:
            cell = out.setdefault(metric, {}).setdefault(record.label, {})
            cell.setdefault(record.dataset, {}).setdefault(record.seed, {})[std] = value
    return out


# (label, dataset) -> the cell's best length, for one metric
Bests = dict[tuple[str, str], Best | None]


def bests_of(view: StudyView, sweep: Sweep) -> Bests:
    return {
        (label, d): best_length(sweep.get(label, {}).get(d, {}))
        for label in view.labels
        for d in view.datasets
    }


def best_length(per_seed: dict[int, dict[float, float]]) -> Best | None:
    """The EMA length with the lowest mean over the seeds measured at every length."""
    stds = sorted(set.intersection(*(set(v) for v in per_seed.values()))) if per_seed else []
    means = [np.mean([per_seed[s][std] for s in per_seed]) for std in stds]
    finite = [(m, std) for m, std in zip(means, stds, strict=True) if math.isfinite(m)]
    if not finite:
        return None
    std = min(finite)[1]
    return Best(std, {seed: values[std] for seed, values in per_seed.items()})


def sweep_figure(
    view: StudyView, sweeps: dict[str, Sweep], out_dir: Path, paired: bool = False
) -> Path:
    """One row per metric, one panel per dataset: median over seeds and their range, of the
    metric, or (``paired``) of each seed's excess over its value at the schedule's best length
    (the schedules' levels differ too much for one axis to show their curves' shapes)."""
    palette = colors(view)
    size = (3.6 * len(view.datasets), 3.0 * len(sweeps))
    fig = Figure(figsize=size, layout="constrained")
    grid = fig.subplots(len(sweeps), len(view.datasets), squeeze=False)
    for row, (metric, sweep) in zip(grid, sweeps.items(), strict=True):
        for ax, dataset in zip(row, view.datasets, strict=True):
            for label in view.labels:
                per_seed = sweep.get(label, {}).get(dataset, {})
                best = best_length(per_seed)
                if best is None:
                    continue
                stds = sorted(set.union(*(set(v) for v in per_seed.values())))
                values = np.array(
                    [
                        [
                            v.get(std, math.nan) - (best.values[seed] if paired else 0.0)
                            for std in stds
                        ]
                        for seed, v in per_seed.items()
                    ]
                )
                median = np.nanmedian(values, 0)
                ax.plot(stds, median, "o-", ms=3, color=palette[label], label=label)
                low, high = np.nanmin(values, 0), np.nanmax(values, 0)
                ax.fill_between(stds, low, high, color=palette[label], alpha=0.15)
            ax.set_xscale("log")
            name = METRICS[metric].title.split(" (")[0].split(",")[0]
            ylabel = f"{name}: excess" if paired else name
            ax.set(title=dataset, xlabel="EMA length (relative std)", ylabel=ylabel)
            ax.grid(alpha=0.3)
    grid[0][0].legend(fontsize=7)
    what = "excess over the schedule's best length, paired by seed" if paired else "value"
    return save(
        fig,
        out_dir,
        "ema_sweep_paired" if paired else "ema_sweep",
        f"Post-hoc EMA: each metric against the averaging length ({what})",
    )


def constant_label(view: StudyView) -> str | None:
    """The label of the study's constant-LR schedule, if it has one."""
    return next((r.label for r in view.records if r.schedule == "constant"), None)


def difference(result: Paired) -> str:
    return f"{result.mean_diff:+.4f} [{fmt(result.ci_low, 4)}, {fmt(result.ci_high, 4)}]"


def verdict(result: Paired) -> str:
    """How a paired difference (schedule minus the other; lower is better) reads."""
    if result.n < 2 or not math.isfinite(result.ci_low):
        return "not enough paired seeds"
    if result.ci_low > 0:
        return "worse (the interval is above 0)"
    if result.ci_high < 0:
        return "better (the interval is below 0)"
    return "not distinguishable (the interval holds 0)"


def sweep_section(view: StudyView, store: Store, out_dir: Path) -> str:
    """The section (a pointer to the sweep when runs kept snapshots but none was swept; ""
    when none kept any); writes ema_best.csv."""
    sweeps = load_sweeps(view, store)
    if not sweeps:
        if not store.snapshot_counts(r.run_id for r in view.finished()):
            return ""
        return (
            "<h2>Post-hoc EMA: the averaging length</h2><p>This study's runs kept post-hoc EMA "
            "snapshots, but no EMA length was measured yet: <code>schedlab measure STUDY "
            "--ema-sweep 0.01,0.02,0.05,0.1,0.2,0.3</code> measures them, then this section "
            "compares the schedules at their best averaging.</p>"
        )
    figure = sweep_figure(view, sweeps, out_dir)
    train = TrainSettings.model_validate(view.spec.get("train", {}))
    # An exponential EMA moved every `ema_every` steps by 1 - beta averages over an exponential
    # window whose mean age, and std, is ema_every / (1 - beta) steps, once it has had a few
    # windows' time after its warm-up (it copies the weights until then).
    window = train.ema_every / (1.0 - train.ema_beta) if train.ema_beta < 1 else math.inf
    fixed = f"decay {train.ema_beta:g} every {train.ema_every} steps"
    if train.steps - train.ema_warmup >= 3 * window:
        fixed += f": an exponential window of relative std about {window / train.steps:.2g}"
    parts = [
        "<h2>Post-hoc EMA: the averaging length</h2>",
        "<p>Each run tracked power-function EMAs while it trained and stored snapshots of them; "
        "<code>schedlab measure --ema-sweep</code> formed from them the EMA of each relative "
        "standard deviation (EDM2's sigma_rel: the averaging window's width as a fraction of "
        "training) at the end of training, without training again. The study's fixed EMA "
        f"({fixed}) is shown beside. The best length is "
        "chosen on the same seeds it is then compared on, which favours every schedule alike; "
        "read small differences with that in mind.</p>",
        image(figure, "Each metric against the EMA length (median and range over seeds)"),
        image(
            sweep_figure(view, sweeps, out_dir, paired=True),
            "The same, as each seed's excess over its value at the schedule's best length: "
            "how much a length other than the best costs (median and range over seeds)",
        ),
    ]
    rows_csv = []
    bests = {metric: bests_of(view, sweep) for metric, sweep in sweeps.items()}
    for metric, per_cell in bests.items():
        title = METRICS[metric].title
        lines = []
        for label in view.labels:
            cells = []
            for d in view.datasets:
                best = per_cell[(label, d)]
                fixed = summarize(list(view.values(label, d, metric).values()))
                if best is None:
                    cells.append("-")
                    continue
                s = summarize(list(best.values.values()))
                at = f"{fmt(s.mean, 4)} ± {fmt(s.std, 4)} at {best.std:g}"
                cells.append(f"{at} (fixed EMA {fmt(fixed.mean, 4)})")
                rows_csv.append([metric, label, d, best.std, s.mean, s.std, s.n, fixed.mean])
            lines.append([label, *cells])
        parts.append(
            f"<h3>{esc(title)}: each schedule at its best EMA length</h3>"
            "<p>Mean ± std over seeds at the length with the lowest mean, the length, and the "
            "mean with the study's fixed EMA.</p>" + table(["schedule", *view.datasets], lines)
        )
        parts.append(paired_at_best(view, per_cell, title))
    parts.append(headline(view, bests))
    with (out_dir / "ema_best.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["metric", "schedule", "dataset", "best_ema_std", "mean", "std", "n", "fixed_ema_mean"]
        )
        writer.writerows(rows_csv)
    return "".join(parts)


def paired_at_best(view: StudyView, bests: Bests, title: str) -> str:
    lines = []
    for label in view.labels:
        if label == view.baseline or view.same_runs_as_baseline(label):
            continue
        cells = []
        for d in view.datasets:
            mine, base = bests[(label, d)], bests[(view.baseline, d)]
            if mine is None or base is None:
                cells.append("-")
                continue
            r = paired_comparison(mine.values, base.values)
            cells.append(f"{difference(r)} p={fmt(r.p_value, 2)} n={r.n}")
        lines.append([label, *cells])
    return (
        f"<p>{esc(title)}, each at its best length, minus the baseline ({esc(view.baseline)}) at "
        f"its best, on shared seeds: mean difference, {INTERVAL} and exact sign-flip p-value.</p>"
        + table(["schedule", *view.datasets], lines)
    )


def headline(view: StudyView, bests: dict[str, Bests]) -> str:
    """Does the constant LR, at its best EMA length, match each decayed schedule at its own?"""
    constant = constant_label(view)
    if constant is None:
        return (
            "<h3>Does a constant LR need decay?</h3><p>This study has no constant-LR schedule "
            "(name <code>constant</code>), so the sweep cannot answer it.</p>"
        )
    lines = []
    for metric, per_cell in bests.items():
        for label in view.labels:
            if label == constant or view.same_runs_as_baseline(label):
                continue
            for d in view.datasets:
                mine, other = per_cell[(constant, d)], per_cell[(label, d)]
                if mine is None or other is None:
                    continue
                r = paired_comparison(mine.values, other.values)
                lines.append(
                    [
                        METRICS[metric].title,
                        label,
                        d,
                        f"{mine.std:g} / {other.std:g}",
                        difference(r),
                        verdict(r),
                    ]
                )
    return (
        f"<h3>With its best averaging, does a constant LR match the decayed schedules?</h3>"
        f"<p>{esc(constant)} at its best EMA length minus each other schedule at its own, paired "
        f"by seed ({INTERVAL}). Lower is better: 'worse' means the constant LR stays behind "
        "even with its best averaging.</p>"
        + table(
            ["metric", "against", "dataset", "best lengths", "difference", "constant LR is"], lines
        )
    )
