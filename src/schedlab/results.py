"""A study's results as rows: every planned run with its status, metrics and settings, the
runs of its tuning trials, and the per-step curves. What `status`, `export` and the Python API
(``schedlab.api``) read; it reads the store only and never imports torch.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from schedlab.store.records import RunRecord
from schedlab.store.status import RunStatus

if TYPE_CHECKING:
    from schedlab.config.study import StudySpec
    from schedlab.store.store import Store


def plan_records(
    study: StudySpec, store: Store, engine: str
) -> list[tuple[str, str, int, str, RunRecord | None]]:
    """(label, dataset, seed, status, record) for every planned run of the study as it is now."""
    from schedlab.metrics import measurement_keys
    from schedlab.trials import planned_runs

    runs = planned_runs(study, engine, store)
    pairs = [(r.label, r.run_id) for r in runs]
    known = {
        (rec.label, rec.run_id): rec
        for rec in store.records_for(pairs, measurement_keys(study.eval))
    }
    rows = []
    for run in runs:
        record = known.get((run.label, run.run_id))
        state = record.status if record else RunStatus.PENDING
        rows.append((run.label, run.dataset, run.seed, state, record))
    return rows


def export_rows(spec: StudySpec, db: Store, engine: str) -> list[dict[str, Any]]:
    """One row per planned run (phase "final"), then one per tuning trial run (phase "tune",
    or "confirm" for a trial retrained at the final length): identity, status, every metric,
    the flattened settings."""
    from schedlab.config.study import default_baseline
    from schedlab.report.data import with_targets
    from schedlab.trials import search_result, searches

    planned = plan_records(spec, db, engine)
    known = [record for *_, record in planned if record is not None]
    baseline = default_baseline(list(dict.fromkeys(label for label, *_ in planned)))
    derived, targets = with_targets(db, spec.model_dump(mode="json"), known, baseline)
    by_run = {(r.label, r.run_id): r for r in derived}
    chosen: dict[tuple[str, str], int] = {}
    trial_rows = []
    for search in searches(spec, engine):
        best = search_result(db, search).chosen
        if best is not None:
            chosen[search.dataset, search.label] = best.number
        for phase, key in (("tune", search.key), ("confirm", search.confirm_key)):
            trials = {run_id: trial for trial, _, run_id in db.trial_runs(key)}
            pairs = [(search.label, run_id) for run_id in trials]
            for record in db.records_for(pairs, {search.tune.objective: objective_key(spec)}):
                trial_rows.append(
                    row_of(spec, record.dataset, record.label, record.seed, record.status, record)
                    | {"phase": phase, "trial": trials[record.run_id], "target_loss": None}
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
    from schedlab.metrics import METRICS

    assert spec.tune is not None
    return METRICS[spec.tune.objective].key_for(spec.eval)


def row_of(
    spec: StudySpec, dataset: str, label: str, seed: int, state: str, record: RunRecord | None
) -> dict[str, Any]:
    from schedlab.metrics import keys

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
    row["resumed_from_step"] = record.resumed_from if record else None
    row["origin"] = record.origin if record else None  # e.g. migrated from schema 1
    row["schedule_name"] = record.schedule if record else None
    row["params"] = json.dumps(record.params, sort_keys=True) if record else None
    settings = {**(record.settings if record else {}), "eval": spec.eval.model_dump()}
    for section, values in sorted(settings.items()):
        for key, value in sorted(values.items()):
            row[f"{section}.{key}"] = value
    return row


# The columns that name a run in the long table of curves.
CURVE_KEYS = ("run_id", "phase", "trial", "dataset", "schedule", "seed", "status")


def stored_curves(
    db: Store, row: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A row's run's training loss and LR per step and its held-out curve ([m, 2] of steps and
    losses; empty when none was recorded), or None when it has no curves (not trained)."""
    stored = db.curves(row["run_id"]) if row["run_id"] else None
    if stored is None:
        return None
    heldout = db.heldout_curves([row["run_id"]]).get(row["run_id"], np.empty((0, 2)))
    return (*stored, heldout)


def curve_columns(rows: list[dict[str, Any]], db: Store) -> dict[str, np.ndarray]:
    """Per-step curves of every trained run among ``rows`` (from ``export_rows``), in long
    format: the run's ``CURVE_KEYS``, then ``step`` (1-based), the training ``loss``, the
    ``lr`` it stepped with and ``heldout`` (the held-out EMA loss where measured, else NaN)."""
    parts: dict[str, list[np.ndarray]] = {
        key: [] for key in (*CURVE_KEYS, "step", "loss", "lr", "heldout")
    }
    for row in rows:
        stored = stored_curves(db, row)
        if stored is None:
            continue
        loss, lr, measured = stored
        steps = np.arange(1, len(loss) + 1)
        heldout = np.full(len(loss), np.nan)
        at = measured[:, 0].astype(int)
        inside = at <= len(loss)
        heldout[at[inside] - 1] = measured[inside, 1]
        for key in CURVE_KEYS:
            parts[key].append(np.full(len(loss), row[key], dtype=object))
        parts["step"].append(steps)
        parts["loss"].append(loss.astype(np.float64))
        parts["lr"].append(lr.astype(np.float64))
        parts["heldout"].append(heldout)
    return {
        key: np.concatenate(values) if values else np.array([], dtype=object)
        for key, values in parts.items()
    }


def sweep_rows(spec: StudySpec, db: Store, engine: str) -> list[dict[str, Any]]:
    """The post-hoc EMA sweep: one row per planned run and EMA length it was measured at
    (``run_id, dataset, schedule, seed, ema_std``, then every metric a sweep can measure, under
    the study's eval settings; empty where not measured)."""
    from schedlab.metrics import averaged

    metrics = {m.key: m.key_for(spec.eval) for m in averaged()}
    planned = [
        (label, dataset, seed, record)
        for label, dataset, seed, _, record in plan_records(spec, db, engine)
        if record is not None
    ]
    values: dict[str, dict[float, dict[str, float]]] = {}  # run id -> std -> metric -> value
    for run_id, std, metric, mkey, value in db.sweep({r.run_id for *_, r in planned}):
        if metrics.get(metric) == mkey:
            values.setdefault(run_id, {}).setdefault(std, {})[metric] = value
    rows = []
    for label, dataset, seed, record in planned:
        for std, measured in sorted(values.get(record.run_id, {}).items()):
            row: dict[str, Any] = {
                "run_id": record.run_id,
                "dataset": dataset,
                "schedule": label,
                "seed": seed,
                "ema_std": std,
            }
            for key in metrics:
                value = measured.get(key, math.nan)
                row[key] = value if math.isfinite(value) else None
            rows.append(row)
    return rows
