"""The report of a tuned study: what each search tried and chose, what tuning cost, how the LR
moved the objective, and what tuning changed against the configurations as published."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schedlab.metrics import METRICS
from schedlab.report.data import StudyView
from schedlab.report.figures import colors, panels, save
from schedlab.report.html import esc, fmt, table
from schedlab.report.stats import INTERVAL, Paired, paired_comparison
from schedlab.report.verdict_sections import difference, pfmt
from schedlab.report.verdicts import compare_settings, judge
from schedlab.trials import SearchResult

# Compared seed by seed between a tuned schedule and its configuration as published.
PUBLISHED_METRICS = ("eval_loss_heldout_ema", "kl_divergence")


def described(values: dict[str, float]) -> str:
    """A configuration as text: "lr 3.2e-03, gamma 0.12, step_size 40"."""
    return ", ".join(
        f"{k} {v:.2e}" if k == "lr" else f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in values.items()
    )


def best_rows(view: StudyView) -> list[list[str]]:
    """One row per search: schedule, dataset, the chosen trial, its configuration and score."""
    rows = []
    for result in view.tuning:
        best = result.chosen
        done = sum(t.state != "pending" for t in result.trials)
        if best is None:
            state = f"{done} of {result.search.budget} trials scored"
            rows.append([result.search.label, result.search.dataset, "-", state, "-"])
            continue
        config = described(best.values)
        at_final = result.search.carried(best.values)
        if at_final != best.values:
            config += f" (at {result.search.final_steps:,} steps: {described(at_final)})"
        rows.append(
            [
                result.search.label,
                result.search.dataset,
                str(best.number),
                config,
                fmt(best.value, METRICS[result.search.tune.objective].digits),
            ]
        )
    return rows


def cost_rows(view: StudyView) -> list[list[str]]:
    """Per schedule, over datasets: tuned parameters, trials, runs, optimizer steps and
    training seconds spent tuning (confirmation included), with the trials that diverged or
    failed: the budget actually spent, as the store recorded it."""
    by_label: dict[str, list[SearchResult]] = {}
    for result in view.tuning:
        by_label.setdefault(result.search.label, []).append(result)
    rows = []
    for label, results in by_label.items():
        trials = [t for r in results for t in (*r.trials, *r.confirmed)]
        seeds = len(results[0].search.tune.tune_seeds)
        lost = sum(t.state in ("diverged", "failed") for t in trials)
        rows.append(
            [
                label,
                str(len(results[0].search.dims)),
                str(sum(len(r.trials) for r in results)),
                str(sum(len(r.confirmed) for r in results)),
                str(len(trials) * seeds),
                f"{sum(t.steps for t in trials):,}",
                f"{math.fsum(t.seconds for t in trials):.1f}",
                str(lost),
            ]
        )
    return rows


def confirm_rows(view: StudyView) -> list[list[str]]:
    """One row per confirmed trial: its score at the tuning length and at the final length."""
    rows = []
    for result in view.tuning:
        chosen = result.chosen
        at_final = {t.number: t for t in result.confirmed}
        digits = METRICS[result.search.tune.objective].digits
        for trial in result.to_confirm():
            final = at_final.get(trial.number)
            rows.append(
                [
                    result.search.label,
                    result.search.dataset,
                    str(trial.number),
                    described(trial.values),
                    fmt(trial.value, digits),
                    "-"
                    if final is None
                    else final.state
                    if final.state != "done"
                    else fmt(final.value, digits),
                    "chosen" if chosen is not None and chosen.number == trial.number else "",
                ]
            )
    return rows


@dataclass(frozen=True)
class PublishedPair:
    tuned: str
    published: str
    dataset: str
    metric: str
    result: Paired


def published_pairs(view: StudyView) -> list[PublishedPair]:
    """Each tuned schedule against every untuned label of the same schedule, seed by seed."""
    tuned = {r.search.label: r.search.entry.name for r in view.tuning}
    schedule_of = {r.label: r.schedule for r in view.records}
    pairs = []
    for label, name in tuned.items():
        resolved = {r.schedule for r in view.records if r.label == label}
        for other in view.labels:
            if other in tuned or schedule_of.get(other) not in resolved | {name}:
                continue
            for metric in PUBLISHED_METRICS:
                for dataset in view.datasets:
                    result = paired_comparison(
                        view.values(label, dataset, metric), view.values(other, dataset, metric)
                    )
                    pairs.append(PublishedPair(label, other, dataset, metric, result))
    return pairs


def tuning_section(view: StudyView) -> str:
    if not view.tuning:
        return ""
    tune = view.tuning[0].search.tune
    objective = METRICS[tune.objective]
    steps = view.tuning[0].search.settings.train.steps
    final_steps = view.tuning[0].search.final_steps
    budget = (
        f"the same budget: {tune.trials} configurations"
        if tune.trials_per_parameter is None
        else f"a budget that scales with its search space: {tune.trials_per_parameter} "
        "configurations per tuned parameter (the table of costs gives each schedule's)"
    )
    confirmed = (
        f" The best {tune.confirm} of each search were then trained again at the study's "
        f"length ({final_steps:,} steps) on the tuning seeds, and the best there was chosen."
        if tune.confirm
        else ""
    )
    carried = (
        f" Tuned parameters that count steps were carried to the {final_steps:,}-step runs in "
        "proportion: a step size or patience keeps its fraction of the run, ExponentialLR's "
        "gamma the LR factor left at the last step."
        if final_steps != steps
        else ""
    )
    intro = (
        f"<p>Every schedule x dataset had {budget}, "
        f"asked by Optuna's {esc(tune.sampler)} sampler (seed {tune.seed}) in batches of "
        f"{tune.batch}, each trained for {steps:,} steps on tuning seed(s) "
        f"{esc(', '.join(map(str, tune.tune_seeds)))} and scored by {esc(objective.label)} "
        f"({objective.direction} is better; a diverged trial scores worst).{carried}{confirmed}"
        " The chosen configuration was then trained on the study's seeds, which tuning never used: "
        "the tables above rank those final runs.</p>"
    )
    best = table(
        ["schedule", "dataset", "trial", "chosen configuration", f"{objective.title} (tuning)"],
        best_rows(view),
    )
    cost = table(
        [
            "schedule",
            "tuned parameters",
            "trials",
            "confirmed",
            "runs",
            "steps",
            "training s",
            "diverged or failed",
        ],
        cost_rows(view),
    )
    confirmation = ""
    if tune.confirm:
        confirmation = "<h3>Confirmed at the final length</h3>" + table(
            [
                "schedule",
                "dataset",
                "trial",
                "configuration",
                f"{objective.title} (tuning length)",
                "(final length)",
                "",
            ],
            confirm_rows(view),
        )
    return (
        "<h2>Tuning</h2>"
        + intro
        + "<h3>Chosen configurations</h3>"
        + best
        + confirmation
        + "<h3>Tuning budget spent per schedule (all datasets)</h3>"
        + cost
        + published_section(view)
    )


def published_section(view: StudyView) -> str:
    pairs = published_pairs(view)
    if not pairs:
        return ""
    settings = compare_settings(view)
    parts = []
    for metric in PUBLISHED_METRICS:
        rows = [p for p in pairs if p.metric == metric and p.result.n]
        margin = settings.margin(metric)
        compared = []
        for p in rows:
            base = [v for v in view.values(p.published, p.dataset, metric).values() if v == v]
            compared.append((p.result, margin.of(sum(base) / len(base)) if base else math.nan))
        judged = judge(compared, settings, METRICS[metric].direction == "lower")
        lines = [
            [
                f"{p.tuned} - {p.published}",
                p.dataset,
                difference(p.result),
                pfmt(p_diff),
                verdict + (f" (~{needed} seeds)" if needed else ""),
            ]
            for p, (p_diff, _, verdict, needed) in zip(rows, judged, strict=True)
        ]
        parts.append(
            f"<h4>{esc(METRICS[metric].label)}</h4>"
            + table(["tuned - as published", "dataset", "difference", "Holm p", "verdict"], lines)
        )
    return (
        "<h3>Tuned vs as published</h3>"
        "<p>Each tuned schedule minus the same schedule as the study file gives it untuned, "
        f"on the final seeds both have: mean difference with its {INTERVAL}, the paired "
        "t-test's p Holm-adjusted over the metric's rows, and the verdict (better: tuning "
        "helped; equivalent: TOST within the [compare] margin).</p>" + "".join(parts)
    )


def sensitivity_figure(view: StudyView, out_dir: Path) -> Path:
    """The objective of every trial against its LR, one panel per dataset, one colour per
    schedule; each search's chosen trial ringed. The axis shows the better three quarters of
    the scores: a worse trial is a triangle on the edge, a diverged one a cross."""
    datasets = list(dict.fromkeys(r.search.dataset for r in view.tuning))
    fig, axes = panels(len(datasets), height=3.4)
    palette = colors(view)
    objective = METRICS[view.tuning[0].search.tune.objective]
    sign = 1 if objective.direction == "lower" else -1
    legend: dict[str, object] = {}
    for ax, dataset in zip(axes, datasets, strict=True):
        results = [r for r in view.tuning if r.search.dataset == dataset]
        scores = [
            t.value
            for r in results
            for t in r.trials
            if t.state == "done" and math.isfinite(t.value)
        ]
        if not scores:
            continue
        edge = float(np.quantile(np.array(scores), 0.75 if sign == 1 else 0.25))
        for result in results:
            color = palette.get(result.search.label, "black")
            done = [t for t in result.trials if t.state == "done"]
            shown = [t for t in done if sign * t.value <= sign * edge]
            (points,) = ax.plot(
                [t.values["lr"] for t in shown],
                [t.value for t in shown],
                "o",
                color=color,
                alpha=0.7,
                markersize=4,
            )
            legend.setdefault(result.search.label, points)
            worse = [t.values["lr"] for t in done if t not in shown]
            ax.plot(worse, [edge] * len(worse), "^" if sign == 1 else "v", color=color, alpha=0.7)
            lost = [t.values["lr"] for t in result.trials if t.state == "diverged"]
            ax.plot(lost, [edge] * len(lost), "x", color=color)
            best = result.best
            if best is not None:
                ax.plot(
                    [best.values["lr"]],
                    [best.value],
                    "o",
                    markersize=11,
                    markerfacecolor="none",
                    markeredgecolor=color,
                    markeredgewidth=1.5,
                )
        ax.set_xscale("log")
        ax.set(title=dataset, xlabel="base LR", ylabel=objective.label)
        ax.grid(alpha=0.3)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize="small")
    return save(
        fig,
        out_dir,
        "sensitivity",
        "Tuning: objective vs LR per trial "
        "(ringed: chosen; on the edge: worse trials, x: diverged)",
    )
