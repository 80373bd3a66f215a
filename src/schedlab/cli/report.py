"""`schedlab report`: tables, figures and one HTML page, from the store alone (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from schedlab.cli.common import app, err, one_line_errors, out
from schedlab.cli.options import ReadEngineOption, StoreOption, StudyArg
from schedlab.metrics import METRICS

if TYPE_CHECKING:
    from schedlab.config.study import StudySpec
    from schedlab.report.data import PlannedStudy
    from schedlab.store.store import Store


@app.command()
@one_line_errors
def report(
    study: StudyArg,
    store: StoreOption = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="directory (default ./reports/<study>)")
    ] = None,
    compare_paper: Annotated[
        bool, typer.Option("--compare-paper", help="show the paper's published numbers beside")
    ] = False,
    baseline: Annotated[
        str | None, typer.Option(help="schedule label to compare against (default: baseline)")
    ] = None,
    engine: ReadEngineOption = None,
) -> None:
    """Write summary.csv, tables (Markdown, LaTeX), figures and index.html for a study: the
    runs its file plans, nothing else."""
    from schedlab.config.study import load_study
    from schedlab.report.build import build_report
    from schedlab.store.store import Store, default_path

    spec = load_study(study)
    path = store if store is not None else default_path(spec.name)
    target = out_dir if out_dir is not None else Path("reports") / spec.name
    with Store(path, create=False, read_only=True) as db:
        planned = planned_study(spec, db, engine)
        result = build_report(db, spec.name, target, compare_paper, baseline, planned)
    missing = len(result.view.missing()) + result.view.not_in_store
    note = f" ({missing} planned runs not finished yet)" if missing else ""
    err.print(f"wrote {result.index}{note}")


def planned_study(spec: StudySpec, db: Store, engine: str | None) -> PlannedStudy:
    """The runs a study file plans, as the report reads them from ``db``."""
    from schedlab.cli.study import read_engine
    from schedlab.report.data import PlannedStudy
    from schedlab.trials import planned_runs, search_result, searches

    engine = read_engine(spec, db, engine)
    return PlannedStudy(
        spec.model_dump(mode="json"),
        [(r.label, r.run_id) for r in planned_runs(spec, engine, db)],
        [search_result(db, search) for search in searches(spec, engine)],
    )


@app.command()
@one_line_errors
def seeds(
    study: StudyArg,
    store: StoreOption = None,
    metric: Annotated[
        str | None,
        typer.Option(help="the metric to plan for (default: [compare] primary)"),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="schedule label to compare against (default: baseline)")
    ] = None,
    engine: ReadEngineOption = None,
) -> None:
    """How many paired seeds would settle each comparison the study leaves inconclusive: from
    the observed paired standard deviation, the seeds a paired t-test needs for [compare]'s
    power at the margin, at level alpha / (comparisons in the family). Writes nothing."""
    from rich.table import Table

    from schedlab.config.study import load_study
    from schedlab.report.data import load_study_view
    from schedlab.report.verdict_sections import baseline_name
    from schedlab.report.verdicts import INCONCLUSIVE, MIN_SEEDS, compare_settings, family
    from schedlab.store.store import Store, default_path

    spec = load_study(study)
    path = store if store is not None else default_path(spec.name)
    with Store(path, create=False, read_only=True) as db:
        view = load_study_view(db, spec.name, baseline, planned_study(spec, db, engine))
    settings = compare_settings(view)
    metric = metric or settings.primary
    if metric not in METRICS or METRICS[metric].direction is None:
        valid = ", ".join(k for k, m in METRICS.items() if m.direction is not None)
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {valid}")
    result = family(view, metric, settings)
    if not any(c.paired.n for c in result.cells):
        raise ValueError(
            f"{metric} was not measured on any finished run of study {spec.name} (paired with "
            f"{baseline_name(view)}): nothing to plan; give another --metric"
        )
    table = Table(
        title=f"study {spec.name}: {metric} against {baseline_name(view)}, margin "
        f"{result.margin_text}, alpha {settings.alpha:g} over {result.size} comparisons, "
        f"power {settings.power:.0%}"
    )
    for column in ("schedule", "dataset", "seeds", "paired sd", "margin"):
        table.add_column(column)
    table.add_column("verdict", no_wrap=True)
    table.add_column("seeds needed", justify="right")
    undecided = 0
    for c in result.cells:
        needed = "-"
        if c.verdict == INCONCLUSIVE:
            undecided += 1
            needed = str(c.seeds_needed) if c.seeds_needed else "more than 100,000"
        table.add_row(
            c.schedule,
            c.dataset,
            str(c.paired.n),
            f"{c.paired.sd:.3g}",
            f"{c.margin:.3g}",
            c.verdict,
            needed,
        )
    out.print(table)
    seeds = max((c.paired.n for c in result.cells), default=0)
    few = f" (a verdict needs at least {MIN_SEEDS})" if seeds < MIN_SEEDS else ""
    out.print(
        f"{undecided} of {len(result.cells)} comparisons inconclusive; the study has "
        f"{seeds} paired seeds per cell{few}."
    )
