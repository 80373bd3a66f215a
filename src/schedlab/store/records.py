"""What goes into the store and what comes out of it, as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from schedlab.averaging.plan import Snapshot
from schedlab.store.status import RunStatus


@dataclass(frozen=True)
class PlannedRun:
    """What the store needs to know of a planned run (plan.RunSpec provides it)."""

    run_id: str
    label: str
    dataset: str
    schedule: str
    params: Mapping[str, Any]
    seed: int
    settings: Mapping[str, Any]  # data and train settings: the training identity's
    engine: str


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    label: str
    dataset: str
    schedule: str
    params: dict[str, Any]
    seed: int
    settings: dict[str, Any]
    engine: str
    status: str  # as shown: a running run whose lease is gone is "stale"
    error: str | None
    diverged_at: int | None
    attempts: int
    training_time: float | None
    host: str | None
    versions: dict[str, str]
    origin: str | None
    metrics: dict[str, float]  # under the measurement keys asked for; NaN when not measured
    resumed_from: int | None = None  # step resumed at from a checkpoint; None: not recorded


@dataclass(frozen=True)
class Commit:
    """Everything a finished run produced, committed in one transaction."""

    status: RunStatus
    training_time: float
    losses: np.ndarray
    lrs: np.ndarray
    heldout_curve: np.ndarray  # [m, 2]: (steps done, held-out EMA loss)
    weights: tuple[np.ndarray, np.ndarray] | None  # raw and EMA, flat (done runs only)
    measurements: dict[str, tuple[str, float]]  # metric -> (measurement key, value)
    samples: tuple[str, np.ndarray, float] | None  # (sample key, points [m, d], seconds)
    diverged_at: int | None = None
    notes: tuple[str, ...] = ()  # stored as the run's error text, joined by '; '
    resumed_from: int = 0  # the step it resumed at from a checkpoint (0: from scratch)
    snapshots: tuple[Snapshot, ...] = ()  # post-hoc EMA snapshots (done runs that track them)
