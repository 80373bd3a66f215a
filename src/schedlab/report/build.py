"""Write a study's report: CSV, Markdown and LaTeX tables, figures, and index.html."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from schedlab.files import atomic_dir
from schedlab.report import html
from schedlab.report.data import PlannedStudy, StudyView, load_study_view
from schedlab.report.ema_sweep import sweep_section
from schedlab.report.figures import FIGURES
from schedlab.report.tables import (
    latex,
    markdown,
    paired_rows,
    paper_rows,
    profiles_by_metric,
    ranks_and_profile,
    ranks_by_metric,
    summary_rows,
    write_summary_csv,
)
from schedlab.report.tuning import sensitivity_figure, tuning_section
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
    paired = paired_rows(view)
    with (out_dir / "paired.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "metric",
                "schedule",
                "baseline",
                "dataset",
                "n",
                "mean_diff",
                "ci_low",
                "ci_high",
                "p_value",
                "warning",
            ]
        )
        for p in paired:
            r = p.result
            writer.writerow(
                [
                    p.metric,
                    p.schedule,
                    view.baseline,
                    p.dataset,
                    r.n,
                    r.mean_diff,
                    r.ci_low,
                    r.ci_high,
                    r.p_value,
                    r.warning or "",
                ]
            )
    ranked_by, ranks, profile = ranks_and_profile(view, rows)
    figures = {name: draw(view, store, out_dir) for name, draw in FIGURES.items()}
    if view.tuning:
        figures["sensitivity"] = sensitivity_figure(view, out_dir)
    sections = [
        html.status_section(view),
        html.kl_section(view, rows),
        html.paired_section(view, paired),
        sweep_section(view, store, out_dir),
        tuning_section(view),
        html.ranking_section(
            ranked_by,
            ranks,
            profile,
            ranks_by_metric(view.labels, rows),
            profiles_by_metric(view, rows),
        ),
        html.time_to_target_section(view, rows),
        html.metric_sections(view, rows),
        html.metrics_section(rows),
    ]
    if compare_paper:
        sections.append(html.paper_section(paper_rows(view, rows)))
    sections.append(html.settings_section(view))
    (out_dir / "index.html").write_text(html.page(view, sections, figures))
