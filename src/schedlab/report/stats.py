"""The statistics a careful reader needs before believing a ranking.

Mean and sample standard deviation over seeds with 95% Student-t intervals of the mean; paired
differences against the baseline on shared seeds with a t interval, a paired t-test, an exact
sign-flip permutation test and a paired TOST equivalence test; Holm's correction over a family;
the seeds a paired t-test needs for a given power; mean ranks (with a bootstrap interval over
seeds) and a performance profile across datasets. SciPy does the work.

A failed or diverged seed is not dropped: it is the worst value of its cell. In ranks it is
+inf (its cell ranks last); in paired tests it takes the worst finite value measured on its
dataset (a loss against every seed that trained).

Why t and not the bootstrap: a percentile bootstrap of the mean over 2-3 seeds is about the
range of the values, and in simulation (normal data) it covered the true mean 56% of the time at
n = 2 and 73-82% at n = 3. The t interval covers 95% at every n (tests/test_report.py simulates
it); at 2-3 seeds it is wide, as it must be.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
INTERVAL = "95% Student-t interval"  # the method, as tables and the page name it
RANDOM_SEED = 0  # the permutation test is exact; a seed keeps any sampling reproducible


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation (ddof = 1); NaN for one value
    ci_low: float
    ci_high: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """Mean, std and the 95% Student-t interval of the mean (NaN interval below 2 values)."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Summary(mean, math.nan, math.nan, math.nan, 1)
    low, high = t_interval(x)
    return Summary(mean, float(x.std(ddof=1)), low, high, n)


def t_interval(x: np.ndarray) -> tuple[float, float]:
    """mean -+ t(0.975, n - 1) s / sqrt(n); a point when every value is the same."""
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    interval = stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    return float(interval.low), float(interval.high)


@dataclass(frozen=True)
class Paired:
    n: int
    mean_diff: float  # schedule minus baseline
    ci_low: float
    ci_high: float
    p_value: float  # two-sided exact sign-flip permutation test
    warning: str | None
    p_t: float = math.nan  # two-sided paired t-test
    sd: float = math.nan  # sample standard deviation of the paired differences
    failed: tuple[int, int] = (0, 0)  # seeds counted as failures: (schedule's, baseline's)
    differences: tuple[float, ...] = ()


def min_p_value(n: int) -> float:
    """The smallest two-sided p-value a sign-flip test on n pairs can reach: 2 / 2^n."""
    return min(1.0, 2.0 / 2**n)


def paired_comparison(
    schedule: Mapping[int, float], baseline: Mapping[int, float], worst: float | None = None
) -> Paired:
    """Compare a schedule with the baseline on the seeds both have (common random numbers).

    ``worst``: what a failed seed (an infinite value) counts as, the worst finite value of its
    dataset; None drops such seeds. NaN (not measured) drops the pair either way."""

    def counted(v: float) -> float:
        return worst if worst is not None and math.isinf(v) else v

    seeds = sorted(
        s
        for s in set(schedule) & set(baseline)
        if np.isfinite(counted(schedule[s])) and np.isfinite(counted(baseline[s]))
    )
    failed = (
        sum(math.isinf(schedule[s]) for s in seeds),
        sum(math.isinf(baseline[s]) for s in seeds),
    )
    n = len(seeds)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, "no shared seeds")
    d = np.array([counted(schedule[s]) - counted(baseline[s]) for s in seeds])
    if n == 1:
        return Paired(
            1,
            float(d[0]),
            math.nan,
            math.nan,
            math.nan,
            "one shared seed: nothing can be concluded",
            failed=failed,
            differences=(float(d[0]),),
        )
    low, high = t_interval(d)
    if np.all(d == 0):
        p = 1.0
    else:
        # Exact for up to 2^n sign flips; each pair's sign is exchangeable under H0.
        result = stats.permutation_test(
            (d,),
            np.mean,
            permutation_type="samples",
            alternative="two-sided",
            n_resamples=np.inf,
            random_state=np.random.default_rng(RANDOM_SEED),
        )
        p = float(result.pvalue)
    warning = None
    if min_p_value(n) > 0.05:
        warning = (
            f"only {n} paired seeds: the smallest possible p-value is "
            f"{min_p_value(n):.3g}, so no difference can be significant at 0.05; "
            "treat this row as descriptive"
        )
    return Paired(
        n,
        float(d.mean()),
        low,
        high,
        p,
        warning,
        p_t=paired_t_p(d),
        sd=float(d.std(ddof=1)),
        failed=failed,
        differences=tuple(float(x) for x in d),
    )


def paired_t_p(d: np.ndarray) -> float:
    """Two-sided p of the paired t-test of mean difference 0 (1 when every difference is 0,
    0 when they are all one nonzero value)."""
    if len(d) < 2:
        return math.nan
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def tost_p(d: Sequence[float], margin: float) -> float:
    """Paired TOST: the p-value that the mean difference lies within (-margin, margin), the
    larger of the two one-sided t-tests (H0: mean <= -margin; H0: mean >= margin)."""
    x = np.asarray(d, dtype=np.float64)
    if len(x) < 2 or not margin > 0:
        return math.nan
    if np.all(x == x[0]):
        return 0.0 if abs(x[0]) < margin else 1.0
    above = stats.ttest_1samp(x, -margin, alternative="greater").pvalue
    below = stats.ttest_1samp(x, margin, alternative="less").pvalue
    return float(max(above, below))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control); NaN stays NaN and is
    not counted in the family. Written out (five lines) rather than adding statsmodels for
    it; tests/test_verdicts.py checks it against statsmodels' multipletests."""
    p = np.asarray(p_values, dtype=np.float64)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    out = np.full(len(p), math.nan)
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


MAX_PLANNED_SEEDS = 100_000


def t_power(n: int, effect: float, sd: float, level: float) -> float:
    """Power of a two-sided paired t-test at ``level`` with n pairs, true mean difference
    ``effect`` and paired standard deviation ``sd`` (noncentral t)."""
    df = n - 1
    critical = stats.t.ppf(1 - level / 2, df)
    shift = effect * math.sqrt(n) / sd
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def seeds_needed(sd: float, effect: float, level: float, power: float = 0.8) -> int | None:
    """The fewest paired seeds for a two-sided paired t-test at ``level`` to detect a true
    difference ``effect`` with ``power``, given the paired standard deviation ``sd``; None
    when more than MAX_PLANNED_SEEDS would be needed (or sd is unknown)."""
    if not (math.isfinite(sd) and math.isfinite(effect) and effect > 0):
        return None
    if sd == 0:
        return 2
    low, high = 2, 2
    while t_power(high, effect, sd, level) < power:  # double, then bisect
        if high >= MAX_PLANNED_SEEDS:
            return None
        low, high = high, min(2 * high, MAX_PLANNED_SEEDS)
    while low < high:
        mid = (low + high) // 2
        if t_power(mid, effect, sd, level) >= power:
            high = mid
        else:
            low = mid + 1
    return high


def mean_ranks(scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """scores[schedule][dataset] (lower is better) -> mean rank over datasets (1 = best).

    Ties share the average rank; a schedule missing on a dataset is ranked last there.
    """
    datasets = sorted({d for per in scores.values() for d in per})
    ranks: dict[str, list[float]] = {s: [] for s in scores}
    for dataset in datasets:
        values = np.array([scores[s].get(dataset, math.nan) for s in scores], dtype=float)
        values = np.where(np.isfinite(values), values, np.inf)
        for s, r in zip(scores, stats.rankdata(values, method="average"), strict=True):
            ranks[s].append(float(r))
    return {s: float(np.mean(r)) if r else math.nan for s, r in ranks.items()}


def performance_profile(
    excess: Mapping[str, Mapping[str, float]], taus: Sequence[float]
) -> dict[str, list[float]]:
    """Fraction of datasets where a schedule is within a factor tau of the best (Dolan & More).

    ``excess[schedule][dataset]`` must be positive and lower-is-better (KL above its bias floor);
    a missing or non-finite value never counts as within tau.
    """
    datasets = sorted({d for per in excess.values() for d in per})
    ratio: dict[str, list[float]] = {s: [] for s in excess}
    for dataset in datasets:
        values = {s: excess[s].get(dataset, math.nan) for s in excess}
        finite = [v for v in values.values() if np.isfinite(v)]
        best = min(finite) if finite else math.nan
        for s, v in values.items():
            ratio[s].append(v / best if np.isfinite(v) and best > 0 else math.inf)
    n = len(datasets)
    return {s: [sum(r <= tau for r in ratio[s]) / n for tau in taus] for s in excess}
