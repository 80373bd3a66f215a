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

from schedlab.averaging.plan import PosthocPlan
from schedlab.averaging.profiles import gamma_of, reconstruction
from schedlab.config.compare import CompareSettings
from schedlab.config.settings import EvalSettings, PosthocSettings, TrainSettings
from schedlab.metrics import METRICS, averaged
from schedlab.report.data import StudyView
from schedlab.report.figures import colors, save
from schedlab.report.html import esc, fmt, image, table
from schedlab.report.stats import INTERVAL, paired_comparison, summarize
from schedlab.report.verdict_sections import difference, pfmt
from schedlab.report.verdicts import compare_settings, judge
from schedlab.store.records import RunRecord
from schedlab.store.store import Store

# label -> dataset -> seed -> EMA std -> value, for one metric
Sweep = dict[str, dict[str, dict[int, dict[float, float]]]]


@dataclass(frozen=True)
class Best:
    std: float  # the usable EMA length whose mean over all seeds is lowest (shown)
    values: dict[int, float]  # seed -> the metric at the length chosen on the other seeds
    cross_fitted: bool  # False: one seed, scored at the length chosen on itself
    chosen: dict[int, float]  # seed -> the length its value was taken at


@dataclass(frozen=True)
class Quality:
    error: float  # relative L2 error of the reconstructed profile
    achieved: float  # its relative std (NaN: negative weights leave it undefined)


def length_quality(
    view: StudyView, stds: list[float], end: int | None = None, steps: int | None = None
) -> dict[float, Quality]:
    """How well the study's snapshots build each swept length after ``end`` steps of a run of
    ``steps`` (default: the study's run length, and its end)."""
    ema = PosthocSettings.model_validate(view.spec.get("ema", {}))
    steps = steps or TrainSettings.model_validate(view.spec.get("train", {})).steps
    end = steps if end is None else end
    taken = [t for t in sorted(PosthocPlan.of(ema.stds, ema.snapshots, steps).steps) if t <= end]
    at = np.array([t for _ in ema.stds for t in taken], dtype=np.float64)
    gammas = np.array([gamma_of(s) for s in ema.stds for _ in taken])
    out = {}
    for std in stds:
        error, achieved = reconstruction(at, gammas, end, gamma_of(std))
        out[std] = Quality(error, achieved if achieved > 0 else math.nan)
    return out


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


def swept_lengths(sweeps: dict[str, Sweep]) -> list[float]:
    return sorted(
        {
            std
            for sweep in sweeps.values()
            for cells in sweep.values()
            for seeds in cells.values()
            for values in seeds.values()
            for std in values
        }
    )


# (label, dataset) -> the cell's best length, for one metric
Bests = dict[tuple[str, str], Best | None]


def bests_of(view: StudyView, sweep: Sweep, usable: set[float]) -> Bests:
    return {
        (label, d): best_length(sweep.get(label, {}).get(d, {}), usable)
        for label in view.labels
        for d in view.datasets
    }


def lowest_mean(per_seed: dict[int, dict[float, float]], usable: set[float]) -> float | None:
    """The usable EMA length with the lowest mean over ``per_seed``'s seeds (those measured
    at every length); None when no usable length has a finite mean."""
    stds = sorted(set.intersection(*(set(v) for v in per_seed.values())) & usable)
    means = [np.mean([per_seed[s][std] for s in per_seed]) for std in stds]
    finite = [(m, std) for m, std in zip(means, stds, strict=True) if math.isfinite(m)]
    return min(finite)[1] if finite else None


def best_length(per_seed: dict[int, dict[float, float]], usable: set[float]) -> Best | None:
    """A cell's best usable EMA length, cross-fitted: its seeds are split in two folds (by
    seed order, alternately); each seed is scored at the length with the lowest mean on the
    other fold, so no value is scored at a length chosen on its own seed. One seed cannot be
    cross-fitted: it is scored at its own best, and says so."""
    if not per_seed:
        return None
    shown = lowest_mean(per_seed, usable)
    if shown is None:
        return None
    seeds = sorted(per_seed)
    if len(seeds) < 2:
        return Best(
            shown, {s: per_seed[s][shown] for s in seeds}, False, dict.fromkeys(seeds, shown)
        )
    folds = [seeds[0::2], seeds[1::2]]
    values, chosen = {}, {}
    for scored, selecting in (folds, folds[::-1]):
        std = lowest_mean({s: per_seed[s] for s in selecting}, usable)
        for seed in scored:
            chosen[seed] = std if std is not None else math.nan
            values[seed] = per_seed[seed].get(std, math.nan) if std is not None else math.nan
    return Best(shown, values, True, chosen)


def sweep_figure(
    view: StudyView,
    sweeps: dict[str, Sweep],
    out_dir: Path,
    usable: set[float],
    paired: bool = False,
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
                shown = lowest_mean(per_seed, usable) if per_seed else None
                if shown is None:
                    continue
                stds = sorted(set.union(*(set(v) for v in per_seed.values())))
                values = np.array(
                    [
                        [
                            v.get(std, math.nan) - (v.get(shown, math.nan) if paired else 0.0)
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


def quality_table(quality: dict[float, Quality], settings: CompareSettings) -> str:
    lines = [
        [
            f"{std:g}",
            f"{q.error:.1%}",
            fmt(q.achieved, 3) if math.isfinite(q.achieved) else "undefined (negative weights)",
            "yes" if q.error <= settings.ema_max_error else "no: built too poorly",
        ]
        for std, q in sorted(quality.items())
    ]
    return (
        "<p>How well the stored snapshots build each swept length at the end of training: the "
        "relative L2 error of the reconstructed averaging profile against the power-function "
        "profile asked for, and the relative std the reconstruction actually has (its "
        "profile's standard deviation over training; undefined where the least-squares "
        "combination gives some snapshots negative weight enough to make its variance "
        f"negative). A length built with an error above {settings.ema_max_error:.0%} "
        "([compare] ema_max_error) is shown but never chosen as a best length.</p>"
        + table(["asked length", "profile error", "achieved length", "may be chosen"], lines)
    )


def sweep_section(view: StudyView, store: Store, out_dir: Path) -> str:
    """The section (a pointer to the sweep when runs kept snapshots but none was swept; ""
    when none kept any); writes ema_best.csv."""
    if view.budgets:  # its section "One run, every budget" reads the trunk's EMA per budget
        return ""
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
    settings = compare_settings(view)
    swept = swept_lengths(sweeps)
    quality = length_quality(view, swept)
    usable = {std for std, q in quality.items() if q.error <= settings.ema_max_error}
    figure = sweep_figure(view, sweeps, out_dir, usable)
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
        f"({fixed}) is shown beside. A schedule's best length is cross-fitted: its seeds are "
        "split in two folds (alternately, by seed), and each seed is scored at the length with "
        "the lowest mean on the other fold, so no seed is scored at a length chosen on itself "
        "(the length shown is the one all seeds would choose).</p>",
        quality_table(quality, settings),
        image(figure, "Each metric against the EMA length (median and range over seeds)"),
        image(
            sweep_figure(view, sweeps, out_dir, usable, paired=True),
            "The same, as each seed's excess over its value at the schedule's best length: "
            "how much a length other than the best costs (median and range over seeds)",
        ),
    ]
    rows_csv = []
    bests = {metric: bests_of(view, sweep, usable) for metric, sweep in sweeps.items()}
    for metric, per_cell in bests.items():
        title = METRICS[metric].title
        lines = []
        for label in view.labels:
            cells = []
            for d in view.datasets:
                best = per_cell[(label, d)]
                fixed_ = summarize(list(view.values(label, d, metric).values()))
                if best is None:
                    cells.append("-")
                    continue
                s = summarize(list(best.values.values()))
                how = "" if best.cross_fitted else ", not cross-fitted: one seed"
                at = f"{fmt(s.mean, 4)} ± {fmt(s.std, 4)} (best {best.std:g}{how})"
                cells.append(f"{at}; fixed EMA {fmt(fixed_.mean, 4)}")
                rows_csv.append(
                    [metric, label, d, best.std, s.mean, s.std, s.n, best.cross_fitted, fixed_.mean]
                )
            lines.append([view.display(label), *cells])
        parts.append(
            f"<h3>{esc(title)}: each schedule at its best EMA length</h3>"
            "<p>Mean ± std over seeds, each seed at the length chosen on the other fold; the "
            "length all seeds choose; the mean with the study's fixed EMA.</p>"
            + table(["schedule", *view.datasets], lines)
        )
        parts.append(paired_at_best(view, per_cell, metric, settings))
    parts.append(headline(view, bests, settings))
    with (out_dir / "ema_best.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "metric",
                "schedule",
                "dataset",
                "best_ema_std",
                "mean",
                "std",
                "n",
                "cross_fitted",
                "fixed_ema_mean",
            ]
        )
        writer.writerows(rows_csv)
    return "".join(parts)


def judged_rows(
    pairs: list[tuple[list[str], Best, Best]], metric: str, settings: CompareSettings
) -> list[list[str]]:
    """Rows of (leading cells, mine, other): the paired difference at the best lengths and
    its verdict, the rows one Holm family, margins from [compare] against the other's mean."""
    margin = settings.margin(metric)
    compared = []
    for _, mine, other in pairs:
        r = paired_comparison(mine.values, other.values)
        finite = [v for v in other.values.values() if math.isfinite(v)]
        compared.append((r, margin.of(float(np.mean(finite))) if finite else math.nan))
    judged = judge(compared, settings, METRICS[metric].direction == "lower")
    return [
        [*lead, difference(r), f"{pfmt(pd_)}", verdict + (f" (~{needed} seeds)" if needed else "")]
        for (lead, _, _), (r, _), (pd_, _, verdict, needed) in zip(
            pairs, compared, judged, strict=True
        )
    ]


def paired_at_best(view: StudyView, bests: Bests, metric: str, settings: CompareSettings) -> str:
    pairs = []
    for label in view.labels:
        if label == view.baseline:
            continue
        for d in view.datasets:
            mine, base = bests[(label, d)], bests[(view.baseline, d)]
            if mine is not None and base is not None:
                pairs.append(([label, d], mine, base))
    return (
        f"<p>{esc(METRICS[metric].title)}, each at its best length, minus the baseline "
        f"({esc(view.baseline)}) at its best, on shared seeds: mean difference with the "
        f"{INTERVAL}, the paired t-test's Holm-adjusted p over these rows, and the verdict "
        f"(equivalent: TOST within {esc(str(settings.margin(metric)))}).</p>"
        + table(
            ["schedule", "dataset", "difference", "Holm p", "verdict"],
            judged_rows(pairs, metric, settings),
        )
    )


def headline(view: StudyView, bests: dict[str, Bests], settings: CompareSettings) -> str:
    """Does the constant LR, at its best EMA length, match each decayed schedule at its own?"""
    constant = constant_label(view)
    if constant is None:
        return (
            "<h3>Does a constant LR need decay?</h3><p>This study has no constant-LR schedule "
            "(name <code>constant</code>), so the sweep cannot answer it.</p>"
        )
    lines = []
    for metric, per_cell in bests.items():
        pairs = []
        for label in view.labels:
            if label == constant:
                continue
            for d in view.datasets:
                mine, other = per_cell[(constant, d)], per_cell[(label, d)]
                if mine is not None and other is not None:
                    lead = [METRICS[metric].title, label, d, f"{mine.std:g} / {other.std:g}"]
                    pairs.append((lead, mine, other))
        lines += judged_rows(pairs, metric, settings)
    return (
        f"<h3>With its best averaging, does a constant LR match the decayed schedules?</h3>"
        f"<p>{esc(constant)} at its best EMA length minus each other schedule at its own, paired "
        f"by seed ({INTERVAL}); per metric the rows are one family, Holm-corrected at alpha = "
        f"{settings.alpha:g}. 'equivalent' needs a TOST within the metric's margin, not an "
        "interval that holds 0; 'inconclusive' says how many seeds would settle it.</p>"
        + table(
            ["metric", "against", "dataset", "best lengths", "difference", "Holm p", "verdict"],
            lines,
        )
    )
