"""`schedlab export`: one row per run of a study, its final runs and its tuning trials (csv,
parquet), or their curves and metrics for TensorBoard or MLflow.

It reads the store only (read-only); csv and parquet never import torch.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from schedlab.cli.common import app, err, fail, one_line_errors
from schedlab.cli.options import ReadEngineOption, StoreOption, StudyArg
from schedlab.cli.study import load, read_engine, store_path
from schedlab.files import atomic_file
from schedlab.results import export_rows, sweep_rows
from schedlab.store.store import Store

FORMATS = ("csv", "parquet", "tensorboard", "mlflow")
WHAT = ("runs", "ema-sweep")


@app.command()
@one_line_errors
def export(
    study: StudyArg,
    out_path: Annotated[
        Path,
        typer.Option(
            "--out",
            help="csv/parquet: the file, or - for stdout (csv); tensorboard/mlflow: a folder",
        ),
    ],
    fmt: Annotated[
        str, typer.Option("--format", metavar="[" + "|".join(FORMATS) + "]", help="what to write")
    ] = "csv",
    store: StoreOption = None,
    engine: ReadEngineOption = None,
    what: Annotated[
        str,
        typer.Option(
            "--what",
            metavar="[" + "|".join(WHAT) + "]",
            help="runs, or the post-hoc EMA sweep: one row per run and EMA length (csv, parquet)",
        ),
    ] = "runs",
) -> None:
    """Write one row per run (metrics by their `train --json` keys, and the settings), or every
    trained run's curves, configuration and metrics as TensorBoard logs or an MLflow database,
    or (--what ema-sweep) one row per run and post-hoc EMA length measured."""
    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if what not in WHAT:
        fail(f"unknown --what {what!r}; valid: {', '.join(WHAT)}")
    if what == "ema-sweep" and fmt not in ("csv", "parquet"):
        fail(f"--what ema-sweep writes csv or parquet, not {fmt}")
    spec = load(study, engine or "fleet")
    to_stdout = str(out_path) == "-"
    if to_stdout and fmt != "csv":
        raise ValueError(f"--out - writes CSV to stdout; {fmt} needs a file or folder")
    with Store(store_path(spec, store), create=False, read_only=True) as db:
        engine = read_engine(spec, db, engine)
        rows = export_rows(spec, db, engine) if what == "runs" else sweep_rows(spec, db, engine)
        if fmt in ("tensorboard", "mlflow"):
            written = write_logs(fmt, rows, db, out_path, spec.name)
            err.print(f"wrote {written} runs to {out_path}", markup=False, highlight=False)
            return
    if to_stdout:
        write_csv(rows, sys.stdout)
        return
    if out_path.is_dir():
        raise ValueError(f"--out {out_path} is a directory; give the file to write")
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            fail("parquet export needs pyarrow: pip install 'schedlab[parquet]'")
    with atomic_file(out_path) as temp:
        if fmt == "csv":
            with temp.open("w", newline="") as f:
                write_csv(rows, f)
        else:
            pq.write_table(pa.Table.from_pylist(rows), temp)
    err.print(f"wrote {len(rows)} rows to {out_path}", markup=False, highlight=False)


def write_csv(rows: list[dict[str, Any]], f: TextIO) -> None:
    writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)


def write_logs(fmt: str, rows: list[dict[str, Any]], db: Store, folder: Path, name: str) -> int:
    """Every trained run's curves, configuration and metrics for TensorBoard or MLflow."""
    from schedlab.exports.common import trained_runs
    from schedlab.files import atomic_dir, is_tensorboard_logs
    from schedlab.metrics import keys

    runs = trained_runs(rows, db, keys())
    if fmt == "mlflow":
        from schedlab.exports.to_mlflow import write_runs as to_mlflow

        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--out {folder} is a file; MLflow export goes into a folder")
        return to_mlflow(runs, folder, name)
    from schedlab.exports.to_tensorboard import write_runs as to_tensorboard

    with atomic_dir(folder, is_tensorboard_logs, "a TensorBoard export") as temp:
        return to_tensorboard(runs, temp)
