"""The embedded store: one SQLite file (WAL) per study holds specs, runs, metrics, curves, samples.

It holds numbers and arrays only (numpy, never torch), so reading it needs no torch import. Each
finished run is committed in one transaction: a crash loses at most the runs in flight.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
FINISHED = ("done", "diverged")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE studies (name TEXT PRIMARY KEY, spec TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    schedule TEXT NOT NULL,
    params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    settings TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'diverged')),
    error TEXT,
    diverged_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    finished_at REAL,
    host TEXT,
    versions TEXT
);
CREATE TABLE study_runs (
    study TEXT NOT NULL,
    label TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    position INTEGER NOT NULL,
    PRIMARY KEY (study, label, run_id)
);
CREATE TABLE metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    key TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE curves (run_id TEXT PRIMARY KEY REFERENCES runs(run_id), loss BLOB, lr BLOB);
CREATE TABLE samples (run_id TEXT PRIMARY KEY REFERENCES runs(run_id), points BLOB);
"""


def encode_array(array: np.ndarray) -> bytes:
    """An array as compressed .npy bytes (dtype and shape travel with it)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), 6)


def decode_array(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False)


@dataclass(frozen=True)
class PlannedRun:
    """What the store needs to know of a planned run (spec.RunSpec provides it)."""

    run_id: str
    label: str
    dataset: str
    schedule: str
    params: Mapping[str, Any]
    seed: int
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    label: str
    dataset: str
    schedule: str
    params: dict[str, Any]
    seed: int
    settings: dict[str, Any]
    status: str
    error: str | None
    diverged_at: int | None
    attempts: int
    host: str | None
    versions: dict[str, str]
    metrics: dict[str, float]


def default_path(study: str) -> Path:
    """Where a study's store lives unless --store says otherwise."""
    return Path("schedlab-runs") / f"{study}.sqlite"


class StoreError(ValueError):
    """A store that cannot be used as it is; the message says why."""


class Store:
    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise StoreError(f"no store at {self.path}; run `schedlab run` on the study first")
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30)
        try:
            self._check_or_create()
        except sqlite3.DatabaseError as err:
            self.conn.close()
            raise StoreError(f"{self.path} is not a schedlab store: {err}") from err

    def _check_or_create(self) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
        if not tables:
            self.conn.execute("PRAGMA journal_mode=WAL")
            with self.conn:
                self.conn.executescript(SCHEMA)
                self.conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            return
        if "meta" not in tables:
            raise StoreError(f"{self.path} is an SQLite file but not a schedlab store")
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer schedlab (store schema "
                f"{version}, this schedlab reads {SCHEMA_VERSION}); upgrade schedlab"
            )
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema {version}; this schedlab reads "
                f"schema {SCHEMA_VERSION} only"
            )
        self.conn.execute("PRAGMA journal_mode=WAL")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self.conn:
            yield self.conn

    def register_study(
        self, name: str, spec: Mapping[str, Any], plan: Iterable[PlannedRun]
    ) -> None:
        """Record the study's spec and its planned runs; runs already known keep their state."""
        with self._transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO studies VALUES (?, ?, ?)",
                (name, json.dumps(spec, sort_keys=True), time.time()),
            )
            c.execute("DELETE FROM study_runs WHERE study = ?", (name,))
            for position, run in enumerate(plan):
                c.execute(
                    "INSERT OR IGNORE INTO runs (run_id, dataset, schedule, params, seed, "
                    "settings, status) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                    (
                        run.run_id,
                        run.dataset,
                        run.schedule,
                        json.dumps(run.params, sort_keys=True),
                        run.seed,
                        json.dumps(run.settings, sort_keys=True),
                    ),
                )
                c.execute(
                    "INSERT OR IGNORE INTO study_runs VALUES (?, ?, ?, ?)",
                    (name, run.label, run.run_id, position),
                )

    def study_spec(self, name: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT spec FROM studies WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def status(self, run_id: str) -> str | None:
        row = self.conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def mark_running(self, run_id: str, host: str, versions: Mapping[str, str]) -> None:
        with self._transaction() as c:
            c.execute(
                "UPDATE runs SET status = 'running', attempts = attempts + 1, started_at = ?, "
                "host = ?, versions = ?, error = NULL WHERE run_id = ?",
                (time.time(), host, json.dumps(dict(versions)), run_id),
            )

    def mark_pending(self, run_id: str, reason: str) -> None:
        with self._transaction() as c:
            c.execute(
                "UPDATE runs SET status = 'pending', error = ? WHERE run_id = ?", (reason, run_id)
            )

    def mark_failed(self, run_id: str, error: str) -> None:
        with self._transaction() as c:
            c.execute(
                "UPDATE runs SET status = 'failed', error = ?, finished_at = ? WHERE run_id = ?",
                (error, time.time(), run_id),
            )

    def finish(
        self,
        run_id: str,
        status: str,
        metrics: Mapping[str, float],
        losses: np.ndarray,
        lrs: np.ndarray,
        samples: np.ndarray | None,
        diverged_at: int | None = None,
        error: str | None = None,
    ) -> None:
        """Commit a finished run (done or diverged) with everything it produced, atomically."""
        if status not in FINISHED:
            raise ValueError(f"finish takes status done or diverged, got {status!r}")
        with self._transaction() as c:
            for table in ("metrics", "curves", "samples"):
                c.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            c.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?)",
                [(run_id, k, None if not np.isfinite(v) else float(v)) for k, v in metrics.items()],
            )
            c.execute(
                "INSERT INTO curves VALUES (?, ?, ?)",
                (run_id, encode_array(losses.astype(np.float32)), encode_array(lrs)),
            )
            if samples is not None:
                c.execute(
                    "INSERT INTO samples VALUES (?, ?)",
                    (run_id, encode_array(samples.astype(np.float32))),
                )
            c.execute(
                "UPDATE runs SET status = ?, diverged_at = ?, error = ?, finished_at = ? "
                "WHERE run_id = ?",
                (status, diverged_at, error, time.time(), run_id),
            )

    def records(self, study: str) -> list[RunRecord]:
        """The runs of the study as last registered, in plan order, one record per label."""
        pairs = self.conn.execute(
            "SELECT label, run_id FROM study_runs WHERE study = ? ORDER BY position", (study,)
        ).fetchall()
        return self.records_for(pairs)

    def records_for(self, pairs: Iterable[tuple[str, str]]) -> list[RunRecord]:
        """One record per (label, run_id) pair known to the store, in the given order."""
        out = []
        for label, run_id in pairs:
            row = self.conn.execute(
                "SELECT dataset, schedule, params, seed, settings, status, error, diverged_at, "
                "attempts, host, versions FROM runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                continue
            metrics = {
                key: float("nan") if value is None else value
                for key, value in self.conn.execute(
                    "SELECT key, value FROM metrics WHERE run_id = ?", (run_id,)
                )
            }
            out.append(
                RunRecord(
                    run_id,
                    label,
                    row[0],
                    row[1],
                    json.loads(row[2]),
                    row[3],
                    json.loads(row[4]),
                    row[5],
                    row[6],
                    row[7],
                    row[8],
                    row[9],
                    json.loads(row[10]) if row[10] else {},
                    metrics,
                )
            )
        return out

    def curves(self, run_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        row = self.conn.execute(
            "SELECT loss, lr FROM curves WHERE run_id = ?", (run_id,)
        ).fetchone()
        return (decode_array(row[0]), decode_array(row[1])) if row else None

    def samples(self, run_id: str) -> np.ndarray | None:
        row = self.conn.execute("SELECT points FROM samples WHERE run_id = ?", (run_id,)).fetchone()
        return decode_array(row[0]) if row else None
