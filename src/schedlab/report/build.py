"""Write a study's report: CSV, Markdown and LaTeX tables, figures, and index.html."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from schedlab.files import atomic_dir
from schedlab.report import html
from schedlab.report.budgets import budgets_section
from schedlab.report.data import PlannedStudy, StudyView, load_study_view
from schedlab.report.ema_sweep import sweep_section
from schedlab.report.figures import FIGURES
from schedlab.report.tables import (
    latex,
    markdown,
    paper_rows,
    profiles_by_metric,
    ranking_metric,
    ranks_by_metric,
    summary_rows,
    unranked,
    write_summary_csv,
)
from schedlab.report.tuning import sensitivity_figure, tuning_section
from schedlab.report.verdict_sections import paired_section, ranks_with_intervals, verdict_section
from schedlab.report.verdicts import Family, compare_settings, failures_by_cell, families
from schedlab.store.store import Store


@dataclass
class Report:
    out_dir: Path
    view: StudyView
    index: Path


def build_report(
    store: Store,
    study: str,
    out_dir: Path,
    compare_paper: bool = False,
    baseline: str | None = None,
    planned: PlannedStudy | None = None,
) -> Report:
    """The report of the runs ``planned`` (a study file's), or of the plan last registered
    under ``study``."""
    view = load_study_view(store, study, baseline, planned)
    with atomic_dir(out_dir) as folder:
        write_report(view, store, folder, compare_paper)
    return Report(out_dir, view, out_dir / "index.html")


def write_report(view: StudyView, store: Store, out_dir: Path, compare_paper: bool) -> None:
    """Every file of the report into ``out_dir``."""
    rows = summary_rows(view)
    write_summary_csv(rows, out_dir / "summary.csv")
    (out_dir / "tables.md").write_text(markdown(view, rows))
    (out_dir / "tables.tex").write_text(latex(view, rows))
    settings = compare_settings(view)
    compared = families(view, settings)
    write_paired_csv(view, compared, out_dir / "paired.csv")
    # Ranks and profiles under every metric, once; the headline uses the ranking metric's.
    ranked_by = ranking_metric(rows)
    by_metric = ranks_by_metric(view.labels, rows, failures_by_cell(view), unranked(view))
    profiles = profiles_by_metric(view, rows)
    figures = {name: draw(view, store, out_dir) for name, draw in FIGURES.items()}
    if view.tuning:
        figures["sensitivity"] = sensitivity_figure(view, out_dir)
    sections = [
        verdict_section(view, compared, settings.primary),
        budgets_section(view, store, compared.get(settings.primary)),
        html.status_section(view),
        html.kl_section(view, rows),
        paired_section(view, compared),
        sweep_section(view, store, out_dir),
        tuning_section(view),
        html.ranking_section(
            ranked_by,
            by_metric.get(ranked_by, dict.fromkeys(view.labels, math.nan)),
            profiles.get(ranked_by, {}),
            ranks_with_intervals(view, ranked_by),
            by_metric,
            profiles,
        ),
        html.time_to_target_section(view, rows),
        html.metric_sections(view, rows),
        html.figures_section(figures),
        html.metrics_section(rows),
    ]
    if compare_paper:
        sections.append(html.paper_section(view, paper_rows(view, rows)))
    sections.append(html.settings_section(view))
    (out_dir / "index.html").write_text(html.page(view, sections))


PAIRED_COLUMNS = (
    "metric",
    "schedule",
    "baseline",
    "dataset",
    "n",
    "failed_seeds",
    "failed_baseline_seeds",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_t",
    "p_holm",
    "p_sign_flip",
    "margin",
    "p_tost_holm",
    "verdict",
    "seeds_needed",
    "family_size",
    "warning",
)


def write_paired_csv(view: StudyView, compared: dict[str, Family], path: Path) -> None:
    """Every comparison of every family, one row each."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PAIRED_COLUMNS)
        for metric, family in compared.items():
            for c in family.cells:
                r = c.paired
                writer.writerow(
                    [
                        metric,
                        c.schedule,
                        view.baseline,
                        c.dataset,
                        r.n,
                        r.failed[0],
                        r.failed[1],
                        r.mean_diff,
                        r.ci_low,
                        r.ci_high,
                        r.p_t,
                        c.p_diff,
                        r.p_value,
                        c.margin,
                        c.p_equivalent,
                        c.verdict,
                        "" if c.seeds_needed is None else c.seeds_needed,
                        family.size,
                        r.warning or "",
                    ]
                )
