"""The report's "One run, every budget": each strategy's primary metric at every budget, its
verdict against the baseline trained for that budget, and the compute each strategy spent.

Strategies: a schedule trained from scratch once per budget; a constant-LR trunk trained once,
to the largest budget (read at each smaller budget from its checkpoint there); each cooldown
branch from that trunk. Compute is read from the store: the steps each run trained (a branch
from the trunk's checkpoint trains only its cooldown) and its training time (a fleet share:
a fleet's wall time over its runs; a branch's without the trunk's time before it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schedlab.config.budgets import (
    BudgetSettings,
    branch_step,
    budget_label,
    split_budget_label,
)
from schedlab.config.entries import ScheduleEntry
from schedlab.report.data import TABLE_METRICS, StudyView
from schedlab.report.ema_sweep import Best, best_length, length_quality, load_sweeps, swept_lengths
from schedlab.report.html import esc, fmt, table
from schedlab.report.stats import paired_comparison, summarize
from schedlab.report.verdict_sections import metric_title
from schedlab.report.verdicts import (
    Family,
    compare_settings,
    counted_values,
    judge,
    lower_is_better,
    worst_finite,
)
from schedlab.store.reads import StoreReads
from schedlab.store.records import RunRecord
from schedlab.store.status import RunStatus

COMPUTE_HEADER = ["strategy", "runs", "steps (measured)", "steps (planned)", "seconds"]


@dataclass(frozen=True)
class Strategy:
    label: str  # the schedule entry's label
    kind: str  # "per budget", "trunk" or "branch"
    trunk: str | None = None  # a branch's trunk label

    def describe(self, entries: dict[str, ScheduleEntry]) -> str:
        if self.kind == "trunk":
            return "trunk: trained once to the largest budget, read at each"
        if self.kind == "branch":
            branch = entries[self.label].branch
            assert branch is not None
            return f"cooldown of {branch.cooldown:.0%} ({branch.shape}) branched from {self.trunk}"
        return "trained from scratch for each budget"


def strategies(view: StudyView) -> list[Strategy]:
    """The study's schedule entries as budget strategies, in file order."""
    entries = [ScheduleEntry.model_validate(e) for e in view.spec.get("schedules", [])]
    trunks = {e.branch.trunk for e in entries if e.branch is not None}
    out = []
    for entry in entries:
        if entry.branch is not None:
            out.append(Strategy(entry.display, "branch", entry.branch.trunk))
        else:
            kind = "trunk" if entry.display in trunks else "per budget"
            out.append(Strategy(entry.display, kind))
    return out


@dataclass(frozen=True)
class Spent:
    """What one strategy cost over the whole study."""

    runs: int
    steps: int  # training steps, read from the store
    seconds: float  # training time (fleet shares), read from the store
    expected_steps: int  # what the plan says it costs


def compute_spent(view: StudyView, store: StoreReads) -> dict[str, Spent]:
    """strategy label -> its compute: a per-budget schedule, every run's steps; a trunk, its
    run to the largest budget; a branch strategy, the trunk's run plus each branch's steps after
    its branch step (all of a branch's steps when it trained from scratch)."""
    budgets = BudgetSettings.model_validate(view.spec["budgets"])
    runs_of: dict[str, list[RunRecord]] = {}
    for r in view.records:
        runs_of.setdefault(split_budget_label(r.label)[0], []).append(r)
    origins = store.branch_origins(r.run_id for r in view.records)
    entries = {e.display: e for e in map(ScheduleEntry.model_validate, view.spec["schedules"])}
    cells = len(view.datasets) * len({r.seed for r in view.records})

    def own(records: list[RunRecord]) -> tuple[int, float]:
        steps, seconds = 0, 0.0
        for r in records:
            if r.status not in (RunStatus.DONE, RunStatus.DIVERGED):
                continue
            budget = r.settings["train"]["steps"]
            origin = origins.get(r.run_id)
            start, time_there = 0, 0.0
            if origin is not None and (r.resumed_from or 0) >= origin[1]:
                start, time_there = origin[1], origin[2] or 0.0
            steps += budget - start
            seconds += (r.training_time or 0.0) - time_there
        return steps, seconds

    out = {}
    for strategy in strategies(view):
        records = runs_of.get(strategy.label, [])
        if strategy.kind == "per budget":
            steps, seconds = own(records)
            expected = sum(budgets.steps) * cells
        else:
            trunk_label = strategy.label if strategy.kind == "trunk" else strategy.trunk
            assert trunk_label is not None
            trunk = [
                r
                for r in runs_of.get(trunk_label, [])
                if r.label == budget_label(trunk_label, budgets.largest)
            ]
            steps, seconds = own(trunk)
            expected = budgets.largest * cells
            if strategy.kind == "branch":
                branch_steps, branch_seconds = own(records)
                steps, seconds = steps + branch_steps, seconds + branch_seconds
                branch = entries[strategy.label].branch
                assert branch is not None
                warmup = int(entries[trunk_label].params.get("warmup_steps", 0))
                expected += cells * sum(
                    b - branch_step(b, branch.cooldown, warmup) for b in budgets.steps
                )
        out[strategy.label] = Spent(len(records), steps, seconds, expected)
    return out


# (schedule label, budget, dataset) -> its post-hoc EMA there at its best length
Averages = dict[tuple[str, int, str], Best]


def averages_at_budgets(view: StudyView, store: StoreReads, metric: str) -> Averages:
    """Each schedule's post-hoc EMA at each budget at its best length, cross-fitted over seeds,
    among the lengths its snapshots build within [compare] ema_max_error (`schedlab measure
    --ema-sweep` measured them): a schedule trained per budget, its own at its end; a trunk,
    its own at each budget (its snapshots taken by then, from a run of the largest budget)."""
    sweep = load_sweeps(view, store).get(metric)
    if not sweep:
        return {}
    max_error = compare_settings(view).ema_max_error
    swept = swept_lengths({metric: sweep})
    out = {}
    for strategy in strategies(view):
        if strategy.kind == "branch":
            continue
        for budget in view.budgets:
            steps = view.budgets[-1] if strategy.kind == "trunk" else budget
            quality = length_quality(view, swept, budget, steps)
            usable = {std for std, q in quality.items() if q.error <= max_error}
            label = view.label_of(budget_label(strategy.label, budget))
            for dataset in view.datasets:
                best = best_length(sweep.get(label, {}).get(dataset, {}), usable)
                if best is not None:
                    out[(strategy.label, budget, dataset)] = best
    return out


def with_failures(
    view: StudyView, label: str, dataset: str, metric: str, best: Best
) -> dict[int, float]:
    """A cell's values at its best length, a failed or diverged seed counted as the worst."""
    failed = counted_values(view, label, dataset, metric)
    return {**best.values, **{s: v for s, v in failed.items() if math.isinf(v)}}


def averaged_verdicts(
    view: StudyView, averages: Averages, metric: str
) -> dict[tuple[str, int, str], tuple[dict[int, float], str]]:
    """(schedule, budget, dataset) -> (seed -> value, a failed seed the worst; its verdict):
    each schedule + post-hoc EMA against the baseline + its post-hoc EMA at that budget (the
    baseline's, "the baseline"); the rows one Holm family."""
    settings = compare_settings(view)
    base_name = split_budget_label(view.baseline)[0]
    keys, compared, values, out = [], [], [], {}
    for (name, budget, dataset), best in averages.items():
        mine = with_failures(view, budget_label(name, budget), dataset, metric, best)
        base_best = averages.get((base_name, budget, dataset))
        if name == base_name or base_best is None:
            out[(name, budget, dataset)] = (mine, "the baseline" if name == base_name else "-")
            continue
        baseline = with_failures(view, budget_label(base_name, budget), dataset, metric, base_best)
        worst = worst_finite(view, dataset, metric)
        paired = paired_comparison(mine, baseline, worst if math.isfinite(worst) else None)
        finite = [v for v in baseline.values() if math.isfinite(v)]
        margin = (
            settings.margin(metric).of(float(sum(finite) / len(finite))) if finite else math.nan
        )
        keys.append((name, budget, dataset))
        compared.append((paired, margin))
        values.append(mine)
    judged = judge(compared, settings, lower_is_better(metric))
    for key, mine, (_, _, verdict, _) in zip(keys, values, judged, strict=True):
        out[key] = (mine, verdict)
    return out


def interval(values: dict[int, float], digits: int) -> str:
    """Mean [95% t interval] n over the finite values, and how many seeds failed."""
    failed = sum(math.isinf(v) for v in values.values())
    s = summarize(list(values.values()))
    text = f"{fmt(s.mean, digits)} [{fmt(s.ci_low, digits)}, {fmt(s.ci_high, digits)}] n={s.n}"
    return text + (f", {failed} failed" if failed else "")


def averaged_row(
    view: StudyView,
    name: str,
    dataset: str,
    averages: Averages,
    verdicts: dict[tuple[str, int, str], tuple[dict[int, float], str]],
    digits: int,
) -> list[str]:
    cells = [f"{name} + post-hoc EMA (at its best length, cross-fitted)"]
    for budget in view.budgets:
        best = averages.get((name, budget, dataset))
        if best is None:
            cells.append("-")
            continue
        values, verdict = verdicts[(name, budget, dataset)]
        how = "" if best.cross_fitted else ", one seed: not cross-fitted"
        cells.append(f"{interval(values, digits)}, length {best.std:g}{how}: {verdict}")
    return cells


def budgets_section(view: StudyView, store: StoreReads, primary: Family | None) -> str:
    """The section, or "" for a study without budgets."""
    if not view.budgets or primary is None:
        return ""
    metric = primary.metric
    digits = TABLE_METRICS.get(metric, ("", 4))[1]
    entries = {e.display: e for e in map(ScheduleEntry.model_validate, view.spec["schedules"])}
    verdicts = {(c.schedule, c.dataset): c for c in primary.cells}
    kinds = strategies(view)
    averages = averages_at_budgets(view, store, metric)
    averaged = averaged_verdicts(view, averages, metric)
    tables = []
    for dataset in view.datasets:
        rows = []
        for strategy in kinds:
            cells = [f"{strategy.label} ({strategy.describe(entries)})"]
            for budget in view.budgets:
                label = view.label_of(budget_label(strategy.label, budget))
                values = counted_values(view, label, dataset, metric)
                text = interval(values, digits)
                cell = verdicts.get((label, dataset))
                if cell is not None:
                    text += f": {cell.verdict}"
                elif label == view.baseline_for(label):
                    text += ": the baseline"
                cells.append(text)
            rows.append(cells)
            if any(key[0] == strategy.label for key in averages):
                rows.append(averaged_row(view, strategy.label, dataset, averages, averaged, digits))
        tables.append(
            f"<h3>{esc(dataset)}</h3>"
            + table(["strategy", *(f"{b} steps" for b in view.budgets)], rows)
        )
    spent = compute_spent(view, store)
    compute_rows = [
        [
            label,
            str(s.runs),
            f"{s.steps:,}",
            f"{s.expected_steps:,}",
            f"{s.seconds:,.0f}",
        ]
        for label, s in spent.items()
    ]
    direction = "lower" if lower_is_better(metric) else "higher"
    return (
        '<h2 id="budgets">One run, every budget</h2>'
        f"<p>{esc(metric_title(metric))} ({direction} is better) at each budget: mean over "
        "seeds with its 95% Student-t interval, failures counted as the worst value; the "
        "verdict against the "
        f"baseline trained for the same budget ({esc(split_budget_label(view.baseline)[0])}), "
        f"from the Holm-corrected family of the verdict above (margin "
        f"{esc(primary.margin_text)}). A trunk's row at a smaller budget is the trunk's "
        "checkpoint there, measured: no cooldown. A + post-hoc EMA row (when the runs kept "
        "snapshots and <code>schedlab measure --ema-sweep</code> measured them) is the "
        "schedule's power-function EMA formed at each budget (a trunk's from the snapshots it "
        "took by then), at the length with the lowest mean on the other fold of seeds among "
        "those its snapshots build within "
        f"{compare_settings(view).ema_max_error:.0%}; it is compared with the baseline + its "
        "post-hoc EMA at that budget (each at its own best length), the rows a Holm family of "
        "their own.</p>"
        + "".join(tables)
        + "<h3>Compute spent for every budget</h3><p>Training steps and training time (fleet "
        "shares: a fleet's wall time over its runs) read from the store, summed over datasets "
        "and seeds; a branch strategy counts its trunk's run once and each branch's steps "
        "after its branch step (a branch that found no kept checkpoint trained from step 0, "
        "and counts every step). Planned: from scratch, the sum of the budgets; a trunk, the "
        "largest budget; a branch strategy, the largest budget plus each budget's "
        "cooldown.</p>" + table(COMPUTE_HEADER, compute_rows)
    )
