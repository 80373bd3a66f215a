"""`schedlab export`: one row per run of a study, its final runs and its tuning trials.

It reads the store only: it opens it read-only and never imports torch.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from schedlab.cli.common import app, err, fail, one_line_errors
from schedlab.cli.options import EngineOption, StoreOption, StudyArg
from schedlab.cli.study import load, plan_records, store_path
from schedlab.files import atomic_file
from schedlab.store.records import RunRecord
from schedlab.store.store import Store

if TYPE_CHECKING:
    from schedlab.config.study import StudySpec


def export_rows(spec: StudySpec, db: Store, engine: str) -> list[dict[str, Any]]:
    """One row per planned run (phase "final"), then one per tuning trial run (phase "tune"):
    identity, status, every metric, the flattened settings."""
    from schedlab.config.study import default_baseline
    from schedlab.report.data import with_targets
    from schedlab.tuning.trials import search_result, searches

    planned = plan_records(spec, db, engine)
    known = [record for *_, record in planned if record is not None]
    baseline = default_baseline([entry.display for entry in spec.schedules])
    derived, targets = with_targets(db, spec.model_dump(mode="json"), known, baseline)
    by_run = {(r.label, r.run_id): r for r in derived}
    chosen: dict[tuple[str, str], int] = {}
    trial_rows = []
    for search in searches(spec, engine):
        best = search_result(db, search).best
        if best is not None:
            chosen[search.dataset, search.label] = best.number
        trials = {run_id: trial for trial, _, run_id in db.trial_runs(search.key)}
        pairs = [(search.label, run_id) for run_id in trials]
        for record in db.records_for(pairs, {search.tune.objective: objective_key(spec)}):
            trial_rows.append(
                row_of(spec, record.dataset, record.label, record.seed, record.status, record)
                | {"phase": "tune", "trial": trials[record.run_id], "target_loss": None}
            )
    rows = []
    for label, dataset, seed, state, planned_record in planned:
        record = planned_record and by_run[(planned_record.label, planned_record.run_id)]
        target = targets.get(dataset, math.nan)
        rows.append(
            row_of(spec, dataset, label, seed, state, record)
            | {
                "phase": "final",
                "trial": chosen.get((dataset, label)),
                "target_loss": target if math.isfinite(target) else None,
            }
        )
    return rows + trial_rows


def objective_key(spec: StudySpec) -> str:
    from schedlab.measure.registry import METRICS

    assert spec.tune is not None
    return METRICS[spec.tune.objective].key_for(spec.eval)


def row_of(
    spec: StudySpec, dataset: str, label: str, seed: int, state: str, record: RunRecord | None
) -> dict[str, Any]:
    from schedlab.measure.registry import keys

    row: dict[str, Any] = {"dataset": dataset, "schedule": label, "seed": seed, "status": state}
    metrics = record.metrics if record else {}
    for key in keys():
        value = metrics.get(key, math.nan)
        row[key] = None if value is None or not math.isfinite(value) else value
    # Filled in by the caller; set here so that every row has its columns in one order.
    row["target_loss"] = None
    row["phase"], row["trial"] = "final", None
    row["diverged_at"] = record.diverged_at if record else None
    row["error"] = record.error if record else None
    row["run_id"] = record.run_id if record else None
    row["engine"] = record.engine if record else None
    row["attempts"] = record.attempts if record else 0
    row["origin"] = record.origin if record else None  # e.g. migrated from schema 1
    row["schedule_name"] = record.schedule if record else None
    row["params"] = json.dumps(record.params, sort_keys=True) if record else None
    settings = {**(record.settings if record else {}), "eval": spec.eval.model_dump()}
    for section, values in sorted(settings.items()):
        for key, value in sorted(values.items()):
            row[f"{section}.{key}"] = value
    return row


@app.command()
@one_line_errors
def export(
    study: StudyArg,
    out_file: Annotated[Path, typer.Option("--out", help="file to write, or - for stdout (csv)")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    store: StoreOption = None,
    engine: EngineOption = "fleet",
) -> None:
    """Write one row per run (metrics by their `train --json` keys, and the settings)."""
    if fmt not in ("csv", "parquet"):
        fail(f"unknown format {fmt!r}; valid formats: csv, parquet")
    spec = load(study, engine)
    with Store(store_path(spec, store), create=False, read_only=True) as db:
        rows = export_rows(spec, db, engine)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    to_stdout = str(out_file) == "-"
    if to_stdout and fmt != "csv":
        raise ValueError("--out - writes CSV to stdout; parquet needs a file")
    if out_file.is_dir():
        raise ValueError(f"--out {out_file} is a directory; give the file to write")
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            fail("parquet export needs pyarrow: pip install 'schedlab[parquet]'")
    if to_stdout:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        return
    with atomic_file(out_file) as temp:
        if fmt == "csv":
            with temp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
        else:
            pq.write_table(pa.Table.from_pylist(rows), temp)
    err.print(f"wrote {len(rows)} rows to {out_file}")
