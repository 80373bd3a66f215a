"""The report's verdict (first on the page) and its paired comparisons, as HTML."""

from __future__ import annotations

import math

from schedlab.config.budgets import split_budget_label
from schedlab.metrics import METRICS
from schedlab.report.data import TABLE_METRICS, StudyView
from schedlab.report.html import esc, fmt, table
from schedlab.report.stats import INTERVAL, Paired
from schedlab.report.verdicts import (
    BETTER,
    EQUIVALENT,
    INCONCLUSIVE,
    MIN_SEEDS,
    Cell,
    Family,
    Recommendation,
    failures_by_cell,
    lower_is_better,
    mean_rank_intervals,
    recommendations,
)


def pfmt(p: float) -> str:
    """A p-value to two significant digits ("-" when there is none)."""
    return "-" if not math.isfinite(p) else f"{p:.2g}"


def difference(result: Paired) -> str:
    """A paired difference and its interval: "+0.0123 [0.0045, 0.0201]"."""
    return f"{result.mean_diff:+.4f} [{fmt(result.ci_low, 4)}, {fmt(result.ci_high, 4)}]"


def metric_title(metric: str) -> str:
    return TABLE_METRICS.get(metric, (METRICS[metric].label, 4))[0]


def settle(cell: Cell) -> str:
    """What would settle an inconclusive cell."""
    if cell.paired.n < MIN_SEEDS:
        more = f"; about {cell.seeds_needed} would settle it" if cell.seeds_needed else ""
        return f"{cell.paired.n} paired seeds, and a verdict needs at least {MIN_SEEDS}{more}"
    if cell.seeds_needed is None:
        return "more than 100,000 seeds would be needed"
    return f"about {cell.seeds_needed} paired seeds would settle it"


def verdict_text(cell: Cell) -> str:
    p = cell.paired
    diff = f"difference {p.mean_diff:+.4g} [{fmt(p.ci_low, 4)}, {fmt(p.ci_high, 4)}]"
    if cell.verdict in (BETTER, "worse"):
        inside = ", inside the margin" if cell.within_margin else ""
        return f"{cell.verdict}: {diff}, Holm p = {cell.p_diff:.2g}{inside}"
    if cell.verdict == EQUIVALENT:
        return (
            f"equivalent within ±{cell.margin:.3g}: {diff}, TOST Holm p = {cell.p_equivalent:.2g}"
        )
    return f"inconclusive: {diff}, Holm p = {pfmt(cell.p_diff)}; {settle(cell)}"


def recommendation_row(rec: Recommendation, view: StudyView, digits: int) -> list[str]:
    failed = f" ({rec.failures} failed seeds counted)" if rec.failures else ""
    mean = fmt(rec.mean, digits) + failed
    if rec.cell is not None:
        return [rec.dataset, view.display(rec.schedule), mean, verdict_text(rec.cell)]
    counts: dict[str, int] = {}
    for cell in rec.baseline_cells:
        counts[cell.verdict] = counts.get(cell.verdict, 0) + 1
    others = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no other schedule"
    name = view.display(rec.schedule)
    return [
        rec.dataset,
        name if rec.schedule == "baseline" else f"{name}, the baseline",
        mean,
        f"best by mean; the others against it: {others}",
    ]


def at_budget(view: StudyView) -> str:
    return f" at the largest budget ({view.budgets[-1]} steps)" if view.budgets else ""


def baseline_name(view: StudyView) -> str:
    """The baseline as the page names it (at every budget in a budgets study)."""
    if not view.budgets:
        return view.baseline
    return f"{split_budget_label(view.baseline)[0]} at the same budget"


def verdict_section(view: StudyView, families: dict[str, Family], primary: str) -> str:
    family = families.get(primary)
    if family is None:
        return (
            '<h2 id="verdict">Verdict</h2><p class="warn">No verdict: the primary metric '
            f"{esc(primary)} was not measured on any finished run of this study.</p>"
        )
    direction = "lower" if lower_is_better(primary) else "higher"
    recs = recommendations(view, family)
    digits = TABLE_METRICS.get(primary, ("", 4))[1]
    rows = [recommendation_row(r, view, digits) for r in recs]
    return (
        '<h2 id="verdict">Verdict</h2>'
        f"<p>Primary metric: <b>{esc(metric_title(primary))}</b> ({direction} is better). Per "
        f"dataset, the schedule with the best mean{at_budget(view)}, and what the statistics "
        f"say against the baseline ({esc(baseline_name(view))}). Differences: paired t-tests, "
        "Holm-corrected over "
        f"the family of {family.size} comparisons (every schedule x dataset) at alpha = "
        f"{family.alpha:g}; equivalent: paired TOST within the margin ({esc(family.margin_text)}),"
        " Holm-corrected the same way; a verdict needs at least "
        f"{MIN_SEEDS} paired seeds. A failed or diverged seed counts as the worst value of "
        "its cell. Inconclusive cells say how many paired seeds would give "
        f"{family.power:.0%} power at the margin (at level alpha / {family.size}).</p>"
        + table(["dataset", "recommended", "mean", "against the baseline"], rows)
        + family_table(view, family)
    )


def family_table(view: StudyView, family: Family) -> str:
    index = {(c.schedule, c.dataset): c for c in family.cells}
    labels = list(dict.fromkeys(c.schedule for c in family.cells))
    lines = [
        [label, *(short(index[(label, d)]) for d in view.datasets if (label, d) in index)]
        for label in labels
    ]
    return f"<h3>Every comparison: {esc(metric_title(family.metric))}</h3>" + table(
        ["schedule", *view.datasets], lines
    )


def short(cell: Cell) -> str:
    if cell.paired.n == 0:
        return "not compared: no paired seeds yet"
    if cell.verdict == INCONCLUSIVE:
        more = f", ~{cell.seeds_needed} seeds" if cell.seeds_needed else ""
        few = f"{cell.paired.n} paired seeds, " if cell.paired.n < MIN_SEEDS else ""
        return f"inconclusive ({few}p = {pfmt(cell.p_diff)}{more})"
    if cell.verdict == EQUIVALENT:
        return f"equivalent (p = {cell.p_equivalent:.2g})"
    return f"{cell.verdict} (p = {cell.p_diff:.2g})"


def paired_section(view: StudyView, families: dict[str, Family]) -> str:
    failures = failures_by_cell(view)
    notes = ""
    if failures:
        listed = ", ".join(f"{label} on {d}: {n}" for (label, d), n in sorted(failures.items()))
        notes = (
            f'<p class="warn">Failed or diverged seeds, counted as the worst value of their cell '
            f"(ranked last; in paired tests the worst value measured on the dataset): {esc(listed)}"
            ".</p>"
        )
    tables = []
    for metric, family in families.items():
        index = {(c.schedule, c.dataset): c for c in family.cells}
        lines = []
        for label in dict.fromkeys(c.schedule for c in family.cells):
            cells = []
            for d in view.datasets:
                c = index.get((label, d))
                if c is None or c.paired.n == 0:
                    cells.append("-")
                    continue
                p = c.paired
                cells.append(
                    f"{p.mean_diff:+.4f} [{fmt(p.ci_low, 4)}, {fmt(p.ci_high, 4)}] "
                    f"Holm p={pfmt(c.p_diff)} (sign-flip p={pfmt(p.p_value)}) n={p.n}: "
                    f"{c.verdict}"
                )
            lines.append([label, *cells])
        tables.append(
            f"<h3>{esc(metric_title(metric))} (margin {esc(family.margin_text)}; family of "
            f"{family.size})</h3>" + table(["schedule", *view.datasets], lines)
        )
    return (
        f'<h2 id="paired">Paired comparisons against the baseline ({esc(baseline_name(view))})'
        "</h2>"
        "<p>Schedule minus baseline on the seeds both have (paired seeds share initial weights, "
        f"data order and noise): mean difference, its {INTERVAL} (on the paired differences), "
        "the paired t-test's p-value Holm-adjusted over the metric's family (every schedule x "
        "dataset), the exact two-sided sign-flip permutation p (unadjusted: a check that "
        "needs no normality), and the verdict. The direction that is better is the metric's "
        "own.</p>" + notes + "".join(tables)
    )


def ranks_with_intervals(view: StudyView, metric: str) -> str:
    labels = [view.baseline, *[label for label in view.labels if label != view.baseline]]
    ranks = mean_rank_intervals(view, metric, labels)
    order = sorted(labels, key=lambda s: ranks[s][0])
    lines = [
        [s, fmt(ranks[s][0], 2), f"[{fmt(ranks[s][1], 2)}, {fmt(ranks[s][2], 2)}]"] for s in order
    ]
    return (
        f"<p>Mean rank by {esc(metric_title(metric))} (1 = best; a failed seed makes its cell "
        "rank last on its dataset), with the 2.5-97.5 percentiles of the mean rank over 2,000 "
        "bootstrap resamples of the seeds (a dataset's seeds resampled together for every "
        "schedule). At 2-3 seeds a bootstrap interval is too narrow (it is about the range of "
        "the values): read it as a spread, not as 95% coverage.</p>"
        + table(["schedule", "mean rank", "bootstrap spread"], lines)
        if math.isfinite(sum(r[0] for r in ranks.values()))
        else ""
    )
