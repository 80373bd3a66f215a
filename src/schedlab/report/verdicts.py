"""What a study lets one claim: per metric, a family of paired comparisons (every schedule
against the baseline on every dataset), Holm-corrected, each cell's verdict one of better,
worse, equivalent (TOST within the margin) or inconclusive, with the seeds that would settle
an inconclusive one; per dataset, the recommended schedule by the primary metric.

Tests of a difference are paired t-tests (their power is what the seed plan computes; the
exact sign-flip p stays beside them as a check that needs no normality); equivalence is a
paired TOST at the study's margin. Both families are Holm-corrected at ``alpha``. The seed
plan asks for the power at Holm's strictest level, alpha / m (Bonferroni), so it never
promises too little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from schedlab.config.compare import CompareSettings
from schedlab.metrics import METRICS
from schedlab.report.data import PAIRED_METRICS, StudyView
from schedlab.report.stats import Paired, holm, paired_comparison, seeds_needed, tost_p
from schedlab.store.status import RunStatus

BETTER, WORSE, EQUIVALENT, INCONCLUSIVE = "better", "worse", "equivalent", "inconclusive"
FAILED = (RunStatus.FAILED, RunStatus.DIVERGED)
MIN_SEEDS = 3  # paired seeds a verdict needs (a t-test on 2 pairs has one degree of freedom)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def compare_settings(view: StudyView) -> CompareSettings:
    return CompareSettings.model_validate(view.spec.get("compare") or {})


def lower_is_better(metric: str) -> bool:
    return METRICS[metric].direction == "lower"


def counted_values(view: StudyView, label: str, dataset: str, metric: str) -> dict[int, float]:
    """seed -> value for a cell's finished runs, a failed or diverged seed counted as the worst
    possible value (+inf where lower is better, -inf where higher is)."""
    worst = math.inf if lower_is_better(metric) else -math.inf
    out = {}
    for r in view.records:
        if r.label != label or r.dataset != dataset:
            continue
        if r.status == RunStatus.DONE:
            out[r.seed] = r.metrics.get(metric, math.nan)
        elif r.status in FAILED:
            out[r.seed] = worst
    return out


def worst_finite(view: StudyView, dataset: str, metric: str) -> float:
    """The worst finite value measured on ``dataset`` (what a failed seed counts as in paired
    tests); NaN when nothing was measured."""
    values = [
        r.metrics.get(metric, math.nan)
        for r in view.records
        if r.dataset == dataset and r.status == RunStatus.DONE
    ]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan
    return max(finite) if lower_is_better(metric) else min(finite)


@dataclass(frozen=True)
class Cell:
    schedule: str
    dataset: str
    metric: str
    paired: Paired
    margin: float  # in the metric's unit
    p_diff: float  # Holm-adjusted paired t p
    p_equivalent: float  # Holm-adjusted TOST p
    verdict: str
    seeds_needed: int | None  # for an inconclusive cell: paired seeds for the plan's power

    @property
    def within_margin(self) -> bool:
        p = self.paired
        return math.isfinite(p.ci_low) and -self.margin < p.ci_low and p.ci_high < self.margin


@dataclass(frozen=True)
class Family:
    metric: str
    cells: list[Cell]
    alpha: float
    power: float
    margin_text: str

    @property
    def size(self) -> int:
        return sum(math.isfinite(c.paired.p_t) for c in self.cells)


def compared_labels(view: StudyView) -> list[str]:
    """Labels compared with the baseline (at their budget in a budgets study): not the
    baseline, nor another name for its runs."""
    return [
        label
        for label in view.labels
        if label != view.baseline_for(label) and not view.same_runs_as_baseline(label)
    ]


def family(view: StudyView, metric: str, settings: CompareSettings) -> Family:
    """Every schedule against the baseline on every dataset, for ``metric``."""
    margin = settings.margin(metric)
    raw = []
    for label in compared_labels(view):
        baseline = view.baseline_for(label)
        for dataset in view.datasets:
            worst = worst_finite(view, dataset, metric)
            paired = paired_comparison(
                counted_values(view, label, dataset, metric),
                counted_values(view, baseline, dataset, metric),
                worst if math.isfinite(worst) else None,
            )
            base = [v for v in view.values(baseline, dataset, metric).values() if math.isfinite(v)]
            delta = margin.of(float(np.mean(base))) if base else math.nan
            raw.append((label, dataset, paired, delta))
    judged = judge([(p, delta) for *_, p, delta in raw], settings, lower_is_better(metric))
    cells = [
        Cell(label, dataset, metric, paired, delta, *verdict)
        for (label, dataset, paired, delta), verdict in zip(raw, judged, strict=True)
    ]
    return Family(metric, cells, settings.alpha, settings.power, str(margin))


def judge(
    comparisons: list[tuple[Paired, float]], settings: CompareSettings, lower: bool
) -> list[tuple[float, float, str, int | None]]:
    """One family of (paired comparison, margin in the metric's unit): for each, (Holm-adjusted
    t p, Holm-adjusted TOST p, verdict, seeds an inconclusive one needs)."""
    p_diff = holm([p.p_t for p, _ in comparisons])
    p_equivalent = holm([tost_p(p.differences, delta) for p, delta in comparisons])
    m = sum(math.isfinite(p) for p in p_diff)
    out = []
    for (paired, delta), pd_, pe in zip(comparisons, p_diff, p_equivalent, strict=True):
        verdict = decide(paired, pd_, pe, settings.alpha, lower)
        needed = None
        if verdict == INCONCLUSIVE and m:
            needed = seeds_needed(paired.sd, delta, settings.alpha / m, settings.power)
            needed = max(needed, MIN_SEEDS) if needed is not None else None
        out.append((pd_, pe, verdict, needed))
    return out


def decide(paired: Paired, p_diff: float, p_equivalent: float, alpha: float, lower: bool) -> str:
    if not math.isfinite(p_diff) or paired.n < MIN_SEEDS:
        return INCONCLUSIVE
    if p_diff < alpha:
        improved = paired.mean_diff < 0 if lower else paired.mean_diff > 0
        return BETTER if improved else WORSE
    if math.isfinite(p_equivalent) and p_equivalent < alpha:
        return EQUIVALENT
    return INCONCLUSIVE


def families(view: StudyView, settings: CompareSettings) -> dict[str, Family]:
    """metric -> its family, for every paired metric that applies to this study's data."""
    out = {}
    metrics = dict.fromkeys([settings.primary, *PAIRED_METRICS])
    for metric in metrics:
        if not any(METRICS[metric].applies(d, view.sample_shape(d)) for d in view.datasets):
            continue
        if not any(
            math.isfinite(v)
            for label in view.labels
            for d in view.datasets
            for v in view.values(label, d, metric).values()
        ):
            continue
        out[metric] = family(view, metric, settings)
    return out


def cell_mean(values: dict[int, float]) -> float:
    """A cell's mean with its failures counted: +-inf when any seed failed, NaN when none
    was measured."""
    x = [v for v in values.values() if not math.isnan(v)]
    return float(np.mean(x)) if x else math.nan


@dataclass(frozen=True)
class Recommendation:
    dataset: str
    schedule: str  # best mean by the primary metric, failures counted
    mean: float
    failures: int  # of the recommended schedule on this dataset
    cell: Cell | None  # its comparison with the baseline (None: it is the baseline)
    baseline_cells: list[Cell]  # the baseline's comparisons on this dataset (when it is best)


def recommendations(view: StudyView, primary: Family) -> list[Recommendation]:
    """Per dataset, the best schedule by mean (in a budgets study: at the largest budget)."""
    lower = lower_is_better(primary.metric)
    compared = [label for label in compared_labels(view) if view.at_largest_budget(label)]
    candidates = [view.baseline_for(compared[0]) if compared else view.baseline, *compared]
    out = []
    for dataset in view.datasets:
        means = {}
        for label in candidates:
            mean = cell_mean(counted_values(view, label, dataset, primary.metric))
            if not math.isnan(mean):
                means[label] = mean if lower else -mean
        if not means:
            continue
        best = min(means, key=lambda s: means[s])
        values = counted_values(view, best, dataset, primary.metric)
        failures = sum(math.isinf(v) for v in values.values())
        cells = [
            c for c in primary.cells if c.dataset == dataset and view.at_largest_budget(c.schedule)
        ]
        mine = next((c for c in cells if c.schedule == best), None)
        out.append(
            Recommendation(
                dataset,
                best,
                means[best] if lower else -means[best],
                failures,
                mine,
                cells if mine is None else [],
            )
        )
    return out


def mean_rank_intervals(
    view: StudyView, metric: str, labels: list[str]
) -> dict[str, tuple[float, float, float]]:
    """label -> (mean rank over datasets, 2.5th and 97.5th percentiles of it over bootstrap
    resamples of the seeds), failures ranked last. A dataset's seeds are resampled once for
    every schedule (they are paired)."""
    sign = 1.0 if lower_is_better(metric) else -1.0
    cells = {
        (label, d): counted_values(view, label, d, metric)
        for label in labels
        for d in view.datasets
    }
    seeds = {d: sorted({s for label in labels for s in cells[(label, d)]}) for d in view.datasets}

    def ranks(choice: dict[str, list[int]]) -> np.ndarray:
        per_dataset = []
        for d in view.datasets:
            means = []
            for label in labels:
                values = [cells[(label, d)].get(s, math.nan) for s in choice[d]]
                values = [v for v in values if not math.isnan(v)]
                mean = sign * float(np.mean(values)) if values else math.inf
                means.append(mean if not math.isnan(mean) else math.inf)
            per_dataset.append(stats.rankdata(means, method="average"))
        return np.mean(per_dataset, axis=0) if per_dataset else np.full(len(labels), math.nan)

    observed = ranks(seeds)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = np.array(
        [
            ranks({d: list(rng.choice(s, size=len(s))) if s else [] for d, s in seeds.items()})
            for _ in range(BOOTSTRAP_RESAMPLES)
        ]
    )
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    return {
        label: (float(observed[i]), float(low[i]), float(high[i])) for i, label in enumerate(labels)
    }


def failures_by_cell(view: StudyView) -> dict[tuple[str, str], int]:
    """(label, dataset) -> seeds that failed or diverged, for cells with any."""
    out: dict[tuple[str, str], int] = {}
    for r in view.records:
        if r.status in FAILED:
            out[(r.label, r.dataset)] = out.get((r.label, r.dataset), 0) + 1
    return out
