"""`schedlab report`: tables, figures and one HTML page, from the store alone (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schedlab.cli.common import app, err, one_line_errors
from schedlab.cli.options import ReadEngineOption, StoreOption, StudyArg


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
    from schedlab.cli.study import read_engine
    from schedlab.config.study import load_study
    from schedlab.report.build import build_report
    from schedlab.report.data import PlannedStudy
    from schedlab.store.store import Store, default_path
    from schedlab.trials import planned_runs, search_result, searches

    spec = load_study(study)
    path = store if store is not None else default_path(spec.name)
    target = out_dir if out_dir is not None else Path("reports") / spec.name
    with Store(path, create=False, read_only=True) as db:
        engine = read_engine(spec, db, engine)
        planned = PlannedStudy(
            spec.model_dump(mode="json"),
            [(r.label, r.run_id) for r in planned_runs(spec, engine, db)],
            [search_result(db, search) for search in searches(spec, engine)],
        )
        result = build_report(db, spec.name, target, compare_paper, baseline, planned)
    missing = len(result.view.missing()) + result.view.not_in_store
    note = f" ({missing} planned runs not finished yet)" if missing else ""
    err.print(f"wrote {result.index}{note}")
