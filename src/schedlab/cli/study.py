"""`schedlab run`, `status` and `export`: studies and their store."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from schedlab.cli.common import app, err, fail, one_line_errors, out
from schedlab.store import RunRecord, Store, default_path

if TYPE_CHECKING:
    from schedlab.spec import StudySpec

STUDY_HELP = "a study TOML file, or a preset: paper, quick"
StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="SQLite store (default ./schedlab-runs/<study>.sqlite)"),
]


def store_path(study: StudySpec, store: Path | None) -> Path:
    return store if store is not None else default_path(study.name)


def plan_records(
    study: StudySpec, store: Store
) -> list[tuple[str, str, int, str, RunRecord | None]]:
    """(label, dataset, seed, status, record) for every planned run of the study as it is now."""
    pairs = [(r.label, r.run_id) for r in study.runs()]
    known = {(rec.label, rec.run_id): rec for rec in store.records_for(pairs)}
    rows = []
    for run in study.runs():
        record = known.get((run.label, run.run_id))
        rows.append(
            (run.label, run.dataset, run.seed, record.status if record else "pending", record)
        )
    return rows


def status_table(study: StudySpec, store: Store) -> Table:
    """Rows schedules, columns datasets; each cell counts its runs by status."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for label, dataset, _, status, _ in plan_records(study, store):
        counts.setdefault((label, dataset), Counter())[status] += 1
    table = Table(title=f"study {study.name}: runs by status")
    table.add_column("schedule", style="bold")
    for dataset in study.datasets:
        table.add_column(dataset)
    colours = {
        "done": "green",
        "diverged": "yellow",
        "failed": "red",
        "running": "cyan",
        "pending": "dim",
    }
    for entry in study.schedules:
        cells = []
        for dataset in study.datasets:
            c = counts.get((entry.display, dataset), Counter())
            cells.append(" ".join(f"[{colours[s]}]{n} {s}[/]" for s, n in sorted(c.items())))
        table.add_row(entry.display, *cells)
    return table


@app.command()
@one_line_errors
def run(
    study: Annotated[str, typer.Argument(help=STUDY_HELP)],
    store: StoreOption = None,
    engine: Annotated[str, typer.Option(help="fleet (vectorized, default) or loop")] = "fleet",
    fleet_size: Annotated[
        int | None, typer.Option(help="runs per fleet (default: 20 on cpu, 256 on cuda)")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda (fleet engine)")] = "cpu",
    use_compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="torch.compile the fleet (default: on cuda)"),
    ] = None,
) -> None:
    """Run a study: plan the grid, skip what is done, re-run failed or interrupted runs."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from schedlab.executors.local import Events, check_engine_options, run_study
    from schedlab.spec import load_study

    check_engine_options(engine, fleet_size, device)
    spec = load_study(study)
    path = store_path(spec, store)
    with (
        Store(path) as db,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
        ) as bar,
    ):
        overall = bar.add_task("runs", total=None, info="")
        current = bar.add_task("run", total=spec.train.steps, info="")

        def started(description: str, done: int, total: int) -> None:
            bar.update(overall, total=total, completed=done)
            bar.update(current, completed=0, description=description, info="")

        def step(n: int, loss: float, lr: float) -> None:
            bar.update(current, completed=n, info=f"loss {loss:.4f} lr {lr:.2e}")

        def finished(run: Any, status: str) -> None:
            bar.advance(overall)

        try:
            summary = run_study(
                spec, db, Events(started, step, finished), engine, fleet_size, device, use_compile
            )
        except KeyboardInterrupt:
            bar.stop()
            err.print(
                f"interrupted: finished runs are saved in {path}; run the same command to resume"
            )
            raise typer.Exit(130) from None
        bar.stop()
        out.print(status_table(spec, db))
    outcomes = ", ".join(f"{n} {s}" for s, n in sorted(summary.outcomes.items())) or "nothing"
    out.print(
        f"{summary.planned} runs planned, {summary.skipped} already finished; this run: "
        f"{outcomes} in {summary.seconds:.1f} s. Store: {path}"
    )
    if summary.outcomes["failed"]:
        raise typer.Exit(1)


@app.command()
@one_line_errors
def status(
    study: Annotated[str, typer.Argument(help=STUDY_HELP)],
    store: StoreOption = None,
) -> None:
    """Done / pending / failed / diverged runs per schedule x dataset."""
    from schedlab.spec import load_study

    spec = load_study(study)
    with Store(store_path(spec, store), create=False) as db:
        out.print(status_table(spec, db))
        for label, dataset, seed, state, record in plan_records(spec, db):
            if record is not None and state in ("failed", "diverged") and record.error:
                out.print(f"{state}: {dataset}/{label}/seed {seed}: {record.error}", markup=False)


def export_rows(spec: StudySpec, db: Store) -> list[dict[str, Any]]:
    """One row per planned run: identity, status, every metric, the flattened settings."""
    from schedlab.pipeline import METRIC_KEYS

    rows = []
    for label, dataset, seed, state, record in plan_records(spec, db):
        row: dict[str, Any] = {"dataset": dataset, "schedule": label, "seed": seed, "status": state}
        metrics = record.metrics if record else {}
        for key in METRIC_KEYS:
            value = metrics.get(key, math.nan)
            row[key] = None if value is None or not math.isfinite(value) else value
        row["diverged_at"] = record.diverged_at if record else None
        row["error"] = record.error if record else None
        row["run_id"] = record.run_id if record else None
        row["schedule_name"] = record.schedule if record else None
        row["params"] = json.dumps(record.params, sort_keys=True) if record else None
        settings = record.settings if record else {}
        for section, values in sorted(settings.items()):
            for key, value in sorted(values.items()):
                row[f"{section}.{key}"] = value
        rows.append(row)
    return rows


@app.command()
@one_line_errors
def export(
    study: Annotated[str, typer.Argument(help=STUDY_HELP)],
    out_file: Annotated[Path, typer.Option("--out", help="file to write")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    store: StoreOption = None,
) -> None:
    """Write one row per run (metrics by their `train --json` keys, and the settings)."""
    if fmt not in ("csv", "parquet"):
        fail(f"unknown format {fmt!r}; valid formats: csv, parquet")
    from schedlab.spec import load_study

    spec = load_study(study)
    with Store(store_path(spec, store), create=False) as db:
        rows = export_rows(spec, db)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with out_file.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            fail("parquet export needs pyarrow: pip install 'schedlab[parquet]'")
        pq.write_table(pa.Table.from_pylist(rows), out_file)
    out.print(f"wrote {len(rows)} rows to {out_file}")
