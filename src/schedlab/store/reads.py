"""Reading the store: plans, run records with their measurements, curves, samples, weights.

``Store`` inherits these; they only read (a read-only store serves every one of them).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from schedlab.averaging.plan import Snapshot
from schedlab.store.arrays import decode_array
from schedlab.store.records import RunRecord
from schedlab.store.status import shown_status

_RUN_COLUMNS = (
    "run_id, dataset, schedule, params, seed, settings, engine, status, error, diverged_at, "
    "attempts, owner, lease_expires, training_time, host, versions, origin, resumed_from"
)


class StoreReads:
    conn: sqlite3.Connection

    def latest_plan(self, name: str) -> tuple[str, dict[str, Any]] | None:
        """(plan id, spec) of the plan last registered under ``name``."""
        row = self.conn.execute(
            "SELECT plan_id, spec FROM studies WHERE name = ? ORDER BY registered_at DESC LIMIT 1",
            (name,),
        ).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def study_names(self) -> list[str]:
        """The names of the studies registered in this store, sorted."""
        rows = self.conn.execute("SELECT DISTINCT name FROM studies ORDER BY name")
        return [row[0] for row in rows]

    def plans(self, name: str) -> list[str]:
        """The ids of every plan registered under ``name``, oldest first."""
        rows = self.conn.execute(
            "SELECT plan_id FROM studies WHERE name = ? ORDER BY registered_at", (name,)
        )
        return [row[0] for row in rows]

    def plan_pairs(self, plan_id: str) -> list[tuple[str, str]]:
        """(label, run id) of a registered plan, in plan order."""
        return self.conn.execute(
            "SELECT label, run_id FROM plan_runs WHERE plan_id = ? ORDER BY position", (plan_id,)
        ).fetchall()

    def trial_runs(self, search: str) -> list[tuple[int, int, str]]:
        """(trial number, seed, run id) of every trial run recorded for ``search``."""
        return self.conn.execute(
            "SELECT trial, seed, run_id FROM trials WHERE search = ? ORDER BY trial, seed",
            (search,),
        ).fetchall()

    def measured_keys(self, run_id: str) -> set[tuple[str, str]]:
        """(metric, measurement key) pairs stored for a run."""
        rows = self.conn.execute(
            "SELECT metric, mkey FROM measurements WHERE run_id = ?", (run_id,)
        ).fetchall()
        return {(m, k) for m, k in rows}

    def records_for(
        self, pairs: Iterable[tuple[str, str]], mkeys: Mapping[str, str]
    ) -> list[RunRecord]:
        """One record per (label, run id) known to the store, in the given order, with the
        metrics stored under ``mkeys`` (metric -> measurement key)."""
        now = time.time()
        out = []
        for label, run_id in pairs:
            row = self.conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                continue
            stored = {
                (metric, mkey): value
                for metric, mkey, value in self.conn.execute(
                    "SELECT metric, mkey, value FROM measurements WHERE run_id = ?", (run_id,)
                )
            }
            metrics = {
                metric: float("nan") if stored.get((metric, mkey)) is None else stored[metric, mkey]
                for metric, mkey in mkeys.items()
            }
            out.append(
                RunRecord(
                    run_id=run_id,
                    label=label,
                    dataset=row[1],
                    schedule=row[2],
                    params=json.loads(row[3]),
                    seed=row[4],
                    settings=json.loads(row[5]),
                    engine=row[6],
                    status=shown_status(row[7], row[11], row[12], now),
                    error=row[8],
                    diverged_at=row[9],
                    attempts=row[10],
                    training_time=row[13],
                    host=row[14],
                    versions=json.loads(row[15]) if row[15] else {},
                    origin=row[16],
                    metrics=metrics,
                    resumed_from=row[17],
                )
            )
        return out

    def curves(self, run_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        row = self.conn.execute(
            "SELECT loss, lr FROM curves WHERE run_id = ?", (run_id,)
        ).fetchone()
        return (decode_array(row[0]), decode_array(row[1])) if row else None

    def checkpoint_state(self, run_id: str) -> bytes | None:
        """The run's latest checkpoint (``schedlab.training.checkpoint``), if it has one."""
        row = self.conn.execute(
            "SELECT state FROM checkpoints WHERE run_id = ?", (run_id,)
        ).fetchone()
        return row[0] if row else None

    def branch_point(self, parent: str, step: int) -> bytes | None:
        """The trunk ``parent``'s checkpoint kept at ``step`` for its branches, if saved and
        not freed."""
        row = self.conn.execute(
            "SELECT state FROM branch_points WHERE run_id = ? AND step = ?", (parent, step)
        ).fetchone()
        return row[0] if row else None

    def branch_point_saved(self, parent: str, step: int) -> bool:
        """Whether the trunk ``parent``'s checkpoint at ``step`` is kept (saved, not freed)."""
        row = self.conn.execute(
            "SELECT state IS NOT NULL FROM branch_points WHERE run_id = ? AND step = ?",
            (parent, step),
        ).fetchone()
        return bool(row and row[0])

    def branch_origins(self, run_ids: Iterable[str]) -> dict[str, tuple[str, int, float | None]]:
        """branch run id -> (trunk run id, branch step, the trunk's training time at that
        step: None until its checkpoint there was saved), for the runs that are branches."""
        out = {}
        for run_id in run_ids:
            row = self.conn.execute(
                "SELECT b.parent, b.step, p.training_time FROM branches b LEFT JOIN "
                "branch_points p ON p.run_id = b.parent AND p.step = b.step WHERE b.run_id = ?",
                (run_id,),
            ).fetchone()
            if row:
                out[run_id] = (row[0], row[1], row[2])
        return out

    def checkpoint_steps(self, run_ids: Iterable[str]) -> dict[str, int]:
        """run id -> the step of its checkpoint, for the runs that have one."""
        out = {}
        for run_id in run_ids:
            row = self.conn.execute(
                "SELECT step FROM checkpoints WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row:
                out[run_id] = row[0]
        return out

    def heldout_curves(self, run_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """run id -> its held-out EMA loss curve [m, 2], for the runs that recorded one."""
        out = {}
        for run_id in run_ids:
            row = self.conn.execute(
                "SELECT heldout FROM curves WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row and row[0] is not None:
                out[run_id] = decode_array(row[0])
        return out

    def samples(self, run_id: str, skey: str) -> tuple[np.ndarray, float] | None:
        """A run's generated samples under a sample key, and the seconds drawing them took."""
        row = self.conn.execute(
            "SELECT points, seconds FROM samples WHERE run_id = ? AND skey = ?", (run_id, skey)
        ).fetchone()
        return (
            (decode_array(row[0]), row[1] if row[1] is not None else float("nan")) if row else None
        )

    def weights(self, run_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """A finished run's raw and EMA weights, flat, or None when not stored."""
        row = self.conn.execute(
            "SELECT raw, ema FROM weights WHERE run_id = ?", (run_id,)
        ).fetchone()
        return (decode_array(row[0]), decode_array(row[1])) if row else None

    def snapshots(self, run_id: str, up_to: int | None = None) -> list[Snapshot]:
        """A run's post-hoc EMA snapshots (taken after at most ``up_to`` steps), by std, step."""
        rows = self.conn.execute(
            "SELECT std, step, weights FROM snapshots WHERE run_id = ? AND step <= ? "
            "ORDER BY std, step",
            (run_id, up_to if up_to is not None else 2**62),
        ).fetchall()
        return [Snapshot(std, step, decode_array(blob)) for std, step, blob in rows]

    def snapshot_counts(self, run_ids: Iterable[str]) -> dict[str, int]:
        """run id -> how many post-hoc EMA snapshots it has (runs with none left out)."""
        return dict(
            self._of_runs(
                "SELECT run_id, count(*) FROM snapshots WHERE {runs} GROUP BY run_id", run_ids
            )
        )

    def sweep(self, run_ids: Iterable[str]) -> list[tuple[str, float, str, str, float]]:
        """Post-hoc EMA measurements: (run id, EMA std, metric, measurement key, value; NaN
        when it could not be measured)."""
        rows = self._of_runs(
            "SELECT run_id, ema_std, metric, mkey, value FROM ema_sweep WHERE {runs} "
            "ORDER BY run_id, ema_std",
            run_ids,
        )
        return [(r, std, m, k, v if v is not None else float("nan")) for r, std, m, k, v in rows]

    def run_times(self, run_id: str) -> tuple[float | None, float | None]:
        """When the run's last attempt started and when it finished (seconds since the epoch;
        None where not recorded)."""
        row = self.conn.execute(
            "SELECT started_at, finished_at FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def known(self, run_ids: Iterable[str]) -> int:
        """How many of ``run_ids`` the store has ever seen (planned, whatever their status)."""
        return self._of_runs("SELECT count(*) FROM runs WHERE {runs}", run_ids)[0][0]

    def _of_runs(self, query: str, run_ids: Iterable[str]) -> list[tuple[Any, ...]]:
        """``query`` with ``{runs}`` standing for "run_id IN (the given ids)"."""
        ids = list(run_ids)
        marks = ", ".join("?" * len(ids))
        return self.conn.execute(query.format(runs=f"run_id IN ({marks})"), ids).fetchall()
