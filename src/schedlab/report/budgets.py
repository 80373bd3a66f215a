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
from typing import Any

from schedlab.config.budgets import (
    BudgetSettings,
    branch_step,
    budget_label,
    split_budget_label,
)
from schedlab.config.entries import ScheduleEntry
from schedlab.report.data import TABLE_METRICS, StudyView
from schedlab.report.html import esc, fmt, table
from schedlab.report.stats import summarize
from schedlab.report.verdict_sections import metric_title
from schedlab.report.verdicts import Family, counted_values, lower_is_better
from schedlab.store.reads import StoreReads
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
    runs_of: dict[str, list[Any]] = {}
    for r in view.records:
        runs_of.setdefault(split_budget_label(r.label)[0], []).append(r)
    origins = store.branch_origins(r.run_id for r in view.records)
    entries = {e.display: e for e in map(ScheduleEntry.model_validate, view.spec["schedules"])}
    cells = len(view.datasets) * len({r.seed for r in view.records})

    def own(records: list[Any]) -> tuple[int, float]:
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


def budgets_section(view: StudyView, store: StoreReads, primary: Family | None) -> str:
    """The section, or "" for a study without budgets."""
    if not view.budgets or primary is None:
        return ""
    metric = primary.metric
    digits = TABLE_METRICS.get(metric, ("", 4))[1]
    entries = {e.display: e for e in map(ScheduleEntry.model_validate, view.spec["schedules"])}
    verdicts = {(c.schedule, c.dataset): c for c in primary.cells}
    kinds = strategies(view)
    tables = []
    for dataset in view.datasets:
        rows = []
        for strategy in kinds:
            cells = [f"{strategy.label} ({strategy.describe(entries)})"]
            for budget in view.budgets:
                label = view.label_of(budget_label(strategy.label, budget))
                values = counted_values(view, label, dataset, metric)
                failed = sum(math.isinf(v) for v in values.values())
                s = summarize(list(values.values()))
                text = f"{fmt(s.mean, digits)} [{fmt(s.ci_low, digits)}, {fmt(s.ci_high, digits)}]"
                text += f" n={s.n}" + (f", {failed} failed" if failed else "")
                cell = verdicts.get((label, dataset))
                if cell is not None:
                    text += f": {cell.verdict}"
                elif label == view.baseline_for(label):
                    text += ": the baseline"
                cells.append(text)
            rows.append(cells)
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
        "checkpoint there, measured: no cooldown.</p>"
        + "".join(tables)
        + "<h3>Compute spent for every budget</h3><p>Training steps and training time (fleet "
        "shares: a fleet's wall time over its runs) read from the store, summed over datasets "
        "and seeds; a branch strategy counts its trunk's run once and each branch's steps "
        "after its branch step (a branch that found no kept checkpoint trained from step 0, "
        "and counts every step). Planned: from scratch, the sum of the budgets; a trunk, the "
        "largest budget; a branch strategy, the largest budget plus each budget's "
        "cooldown.</p>" + table(COMPUTE_HEADER, compute_rows)
    )
