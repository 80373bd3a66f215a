"""The study's tables: summary rows, paired comparisons, ranks, and their CSV/Markdown/LaTeX."""

from __future__ import annotations

import csv
import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from schedlab.metrics import METRICS
from schedlab.report.data import TABLE_METRICS, StudyView
from schedlab.report.stats import (
    INTERVAL,
    Summary,
    mean_ranks,
    performance_profile,
    summarize,
)
from schedlab.report.verdicts import failures_by_cell

PROFILE_TAUS = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
# KL within this many bits of the floor counts as at the floor for the performance profile;
# another floored metric within this fraction of its floor's size.
EXCESS_FLOOR_BITS = 0.01
FLOOR_MARGIN = 0.01


@dataclass(frozen=True)
class SummaryRow:
    schedule: str
    dataset: str
    metric: str
    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int


def summary_rows(view: StudyView) -> list[SummaryRow]:
    rows = []
    for metric in TABLE_METRICS:
        for label in view.labels:
            for dataset in view.datasets:
                s = summarize(list(view.values(label, dataset, metric).values()))
                rows.append(
                    SummaryRow(label, dataset, metric, s.mean, s.std, s.ci_low, s.ci_high, s.n)
                )
    return rows


def ranking_metric(rows: list[SummaryRow]) -> str:
    """What the headline ranking ranks by: KL where it was measured (vector data), else the
    held-out EMA loss (images, where KL does not apply)."""
    measured = any(r.metric == "kl_divergence" and math.isfinite(r.mean) for r in rows)
    return "kl_divergence" if measured else "eval_loss_heldout_ema"


def profile_gap(view: StudyView, metric: str, dataset: str, mean: float) -> float:
    """What a performance profile takes ratios of (positive, lower is better), or NaN.

    A metric with a floor is scored by its gap to the floor (estimators can go below 0, and
    the floor is what a perfect model scores), clipped below at EXCESS_FLOOR_BITS for KL and at
    FLOOR_MARGIN of the floor's size otherwise, so that every run at the floor ties for best.
    A lower-is-better metric without a floor (losses, times) is scored by its value.
    """
    spec = METRICS[metric]
    if not math.isfinite(mean) or spec.direction is None:
        return math.nan
    if spec.floor is None:
        return mean if spec.direction == "lower" and mean > 0 else math.nan
    floor = view.floor(metric, dataset)
    gap = mean - floor if spec.direction == "lower" else floor - mean
    margin = EXCESS_FLOOR_BITS if metric == "kl_divergence" else FLOOR_MARGIN * abs(floor)
    return max(gap, margin) if math.isfinite(gap) and margin > 0 else math.nan


def profiles_by_metric(
    view: StudyView, rows: list[SummaryRow]
) -> dict[str, dict[str, list[float]]]:
    """metric -> schedule -> its performance profile at PROFILE_TAUS (Dolan & More), for every
    shown metric that can be scored (``profile_gap``)."""
    out = {}
    failed = failures_by_cell(view)
    skip = unranked(view)
    for metric in shown_metrics(rows):
        if metric in skip:
            continue
        gaps: dict[str, dict[str, float]] = {label: {} for label in view.labels}
        for row in rows:
            if row.metric == metric:
                mean = math.inf if (row.schedule, row.dataset) in failed else row.mean
                gaps[row.schedule][row.dataset] = profile_gap(view, metric, row.dataset, mean)
        if any(math.isfinite(v) for per in gaps.values() for v in per.values()):
            out[metric] = performance_profile(gaps, PROFILE_TAUS)
    return out


def ranks_by_metric(
    labels: list[str],
    rows: list[SummaryRow],
    failed: Collection[tuple[str, str]] = (),
    skip: Collection[str] = (),
) -> dict[str, dict[str, float]]:
    """metric -> schedule -> mean rank over datasets (1 = best), for every shown metric not in
    ``skip`` that has a better direction; a higher-is-better metric is ranked from the top; a
    cell in ``failed`` (label, dataset: a failed or diverged seed) ranks last on its dataset."""
    out = {}
    for metric in shown_metrics(rows):
        if metric in skip:
            continue
        direction = METRICS[metric].direction
        if direction is None:
            continue
        sign = 1.0 if direction == "lower" else -1.0
        scores: dict[str, dict[str, float]] = {label: {} for label in labels}
        for row in rows:
            if row.metric != metric:
                continue
            if (row.schedule, row.dataset) in failed:
                scores[row.schedule][row.dataset] = math.inf
            elif row.n:
                scores[row.schedule][row.dataset] = sign * row.mean
        out[metric] = mean_ranks(scores)
    return out


# Times a fleet measures for all its runs at once: each run's is a share (the fleet's wall time
# divided by its runs), the same for every run of a fleet, so they are shown but not ranked.
FLEET_SHARES = ("training_time", "inference_time", "seconds_to_target")


def shared_times(view: StudyView) -> bool:
    """True when the study's times are fleet shares (any run trained in a fleet)."""
    return any(r.engine == "fleet" for r in view.records)


def unranked(view: StudyView) -> tuple[str, ...]:
    """Metrics shown but not ranked or profiled: times that are fleet shares."""
    return FLEET_SHARES if shared_times(view) else ()


def cell(s: Summary | SummaryRow, digits: int) -> str:
    if s.n == 0 or not math.isfinite(s.mean):
        return "-"
    if s.n == 1 or not math.isfinite(s.std):
        return f"{s.mean:.{digits}f}"
    return f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"


def shown_metrics(rows: list[SummaryRow]) -> dict[str, tuple[str, int]]:
    """The table metrics with at least one value in this study (log_density, say, exists only
    for datasets with a known density), in registry order."""
    measured = {row.metric for row in rows if row.n}
    return {key: value for key, value in TABLE_METRICS.items() if key in measured}


def has_floor(metric: str) -> bool:
    return METRICS[metric].floor is not None


def floor_label(metric: str) -> str:
    """A floor of a lower-is-better metric is the estimator's bias; of a higher-is-better one,
    the best a model can expect to score."""
    return "bias floor" if METRICS[metric].direction == "lower" else "perfect model"


def cell_value(value: float, metric: str) -> str:
    return f"{value:.{TABLE_METRICS[metric][1]}f}" if math.isfinite(value) else "-"


def metric_grid(view: StudyView, rows: list[SummaryRow], metric: str) -> list[list[str]]:
    """[[schedule, cell per dataset ...], ...] for one metric. A cell whose value exists for
    only some of its finished runs (a target some seeds never reached) says how many."""
    digits = TABLE_METRICS[metric][1]
    index = {(r.schedule, r.dataset): r for r in rows if r.metric == metric}

    def shown(label: str, dataset: str) -> str:
        row = index[(label, dataset)]
        if not METRICS[metric].applies(dataset, view.sample_shape(dataset)):
            return "n/a"  # the true log-density of digits, say: there is none
        runs = len(view.values(label, dataset, metric))
        return cell(row, digits) + (f" ({row.n} of {runs})" if row.n < runs else "")

    return [
        [view.display(label), *(shown(label, d) for d in view.datasets)] for label in view.labels
    ]


def write_summary_csv(rows: list[SummaryRow], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(SummaryRow.__dataclass_fields__))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ("" if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in asdict(row).items()
                }
            )


def markdown(view: StudyView, rows: list[SummaryRow]) -> str:
    parts = [
        f"# Study {view.name}\n",
        "Mean ± sample std over seeds (n per cell in summary.csv; ci_low and ci_high there are "
        f"the {INTERVAL} of the mean).\n",
    ]
    for metric, (title, _) in shown_metrics(rows).items():
        parts.append(f"\n## {title}\n")
        parts.append("| schedule | " + " | ".join(view.datasets) + " |")
        parts.append("| --- |" + " --- |" * len(view.datasets))
        parts.extend("| " + " | ".join(line) + " |" for line in metric_grid(view, rows, metric))
        if has_floor(metric):
            floors = [cell_value(view.floor(metric, d), metric) for d in view.datasets]
            parts.append(f"| *{floor_label(metric)}* | " + " | ".join(floors) + " |")
    return "\n".join(parts) + "\n"


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex(view: StudyView, rows: list[SummaryRow]) -> str:
    """One booktabs table per metric."""
    parts = []
    cols = "l" + "c" * len(view.datasets)
    for metric, (title, _) in shown_metrics(rows).items():
        parts.append("\\begin{table}[t]\n\\centering")
        parts.append(f"\\caption{{{latex_escape(title)}: mean $\\pm$ std over seeds}}")
        parts.append(f"\\begin{{tabular}}{{{cols}}}\n\\toprule")
        parts.append("Schedule & " + " & ".join(map(latex_escape, view.datasets)) + " \\\\")
        parts.append("\\midrule")
        for line in metric_grid(view, rows, metric):
            cells = [latex_escape(line[0])] + [c.replace("±", "$\\pm$") for c in line[1:]]
            parts.append(" & ".join(cells) + " \\\\")
        parts.append("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    return "\n".join(parts)


PAPER_METRICS = {
    "training_time_s": "training_time",
    "eval_loss": "eval_loss",
    "inference_time_s": "inference_time",
    "kl_divergence": "kl_divergence",
}


@dataclass(frozen=True)
class PaperRow:
    schedule: str
    dataset: str
    metric: str
    paper: float
    ours: float
    n: int

    @property
    def diff(self) -> float:
        return self.ours - self.paper


def paper_rows(view: StudyView, rows: list[SummaryRow]) -> list[PaperRow]:
    """The paper's published numbers beside this study's, for the cells both have."""
    text = resources.files("schedlab").joinpath("resources/paper_tables.csv").read_text()
    index = {(r.schedule, r.dataset, r.metric): r for r in rows}
    out = []
    for paper in csv.DictReader(text.splitlines()):
        for column, metric in PAPER_METRICS.items():
            ours = index.get((view.label_of(paper["schedule"]), paper["dataset"], metric))
            if ours is not None and ours.n:
                out.append(
                    PaperRow(
                        paper["schedule"],
                        paper["dataset"],
                        metric,
                        float(paper[column]),
                        ours.mean,
                        ours.n,
                    )
                )
    return out
