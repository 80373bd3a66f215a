"""What every export format takes from a study's rows: trained runs, hyperparameters, metrics,
curves."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from schedlab.results import stored_curves
from schedlab.store.status import RunStatus

if TYPE_CHECKING:
    from schedlab.store.store import Store

# Columns of an export row that are a run's identity or state, not a hyperparameter or a metric.
IDENTITY = ("run_id", "dataset", "schedule", "seed", "phase", "trial", "status", "engine")


@dataclass(frozen=True)
class ExportedRun:
    row: dict[str, Any]
    hparams: dict[str, float | int | str | bool]
    metrics: dict[str, float]
    loss: np.ndarray  # [steps] training loss, step 1 first
    lr: np.ndarray  # [steps] the LR of each step
    heldout: np.ndarray  # [m, 2] steps and held-out EMA losses
    # When it trained: (started, finished), seconds since the epoch (None: not recorded).
    times: tuple[float | None, float | None] = (None, None)

    @property
    def name(self) -> str:
        """A readable path for the run: dataset/schedule/seed-k, a trial's under tune/."""
        row = self.row
        schedule = str(row["schedule"]).replace("/", "_")
        if row["phase"] == "tune":
            return f"tune/{row['dataset']}/{schedule}/trial-{row['trial']}-seed-{row['seed']}"
        return f"{row['dataset']}/{schedule}/seed-{row['seed']}"


def trained_runs(
    rows: list[dict[str, Any]], db: Store, metric_keys: list[str]
) -> Iterator[ExportedRun]:
    """The rows of runs that trained (done or diverged), with their curves from ``db``."""
    for row in rows:
        if row["status"] not in (RunStatus.DONE, RunStatus.DIVERGED) or not row["run_id"]:
            continue
        stored = stored_curves(db, row)
        if stored is not None:
            yield ExportedRun(
                row,
                hparams_of(row, metric_keys),
                metrics_of(row, metric_keys),
                *stored,
                times=db.run_times(str(row["run_id"])),
            )


def hparams_of(row: dict[str, Any], metric_keys: list[str]) -> dict[str, Any]:
    """The run's configuration: its identity, the schedule's parameters, every setting."""
    out: dict[str, Any] = {k: row[k] for k in IDENTITY if row.get(k) is not None}
    for key, value in json.loads(row["params"] or "{}").items():
        out[f"params.{key}"] = value if isinstance(value, int | float | str | bool) else str(value)
    for key, value in row.items():
        if "." in key and key not in metric_keys and value is not None:
            out[key] = value if isinstance(value, int | float | str | bool) else str(value)
    return out


def metrics_of(row: dict[str, Any], metric_keys: list[str]) -> dict[str, float]:
    return {
        key: float(row[key])
        for key in metric_keys
        if isinstance(row.get(key), int | float) and math.isfinite(row[key])
    }
