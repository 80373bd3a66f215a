"""`schedlab report`: tables, figures and one HTML page, from the store alone (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schedlab.cli.common import app, one_line_errors, out
from schedlab.cli.options import StoreOption, StudyArg


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
) -> None:
    """Write summary.csv, tables (Markdown, LaTeX), figures and index.html for a study."""
    from schedlab.config.presets import study_name
    from schedlab.report.build import build_report
    from schedlab.store.store import Store, default_path

    name = study_name(study)
    path = store if store is not None else default_path(name)
    target = out_dir if out_dir is not None else Path("reports") / name
    with Store(path, create=False, read_only=True) as db:
        result = build_report(db, name, target, compare_paper, baseline)
    missing = len(result.view.missing())
    note = f" ({missing} planned runs not finished yet)" if missing else ""
    out.print(f"wrote {result.index}{note}")
