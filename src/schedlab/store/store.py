"""The embedded store: one SQLite file (WAL) holds plans, runs, curves, weights, measurements.

It holds numbers and arrays only (numpy, never torch). Any number of drivers may share one:
a driver claims a run with a compare-and-set (a claim that loses returns False), holds a lease
it renews while it trains, and commits everything the run produced in one transaction, and
only while it still owns the run. A lease that runs out returns the run to whoever claims it
next. Read-only commands open the file read-only and never write, even to migrate it.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from schedlab.averaging.plan import Snapshot
from schedlab.store.arrays import encode_array
from schedlab.store.reads import StoreReads
from schedlab.store.records import Commit, PlannedRun
from schedlab.store.schema import SCHEMA_VERSION, create, migrate, plan_id_of
from schedlab.store.status import FINISHED, RunStatus, shown_status

PENDING, RUNNING, FAILED = RunStatus.PENDING, RunStatus.RUNNING, RunStatus.FAILED
_FINISHED = ", ".join(f"'{s}'" for s in FINISHED)


def default_path(study: str) -> Path:
    """Where a study's store lives unless --store says otherwise."""
    return Path("schedlab-runs") / f"{study}.sqlite"


class StoreError(ValueError):
    """A store that cannot be used as it is; the message says why."""


class DiskFullError(OSError):
    """The disk under the store filled up while writing: the study stops (its runs go back
    to pending) and the message names the file."""

    def __init__(self, path: Path, err: sqlite3.Error) -> None:
        super().__init__(errno.ENOSPC, f"disk full (SQLite: {err}); free some space and run again")
        self.filename = str(path)


def describe_error(path: Path, err: sqlite3.Error) -> str:
    """One line naming the store and what is wrong with it, and what to do."""
    text = " ".join(str(err).split())  # SQLite's own text may span lines
    if "malformed" in text:
        return (
            f"{path} is corrupted (SQLite: {text}); restore it from a backup, or move it aside "
            "and run the study again"
        )
    if "full" in text:
        return f"{path}: the disk is full (SQLite: {text}); free some space and run again"
    if "readonly" in text or "unable to open" in text:
        return f"{path} cannot be written (SQLite: {text}); check its and its folder's permissions"
    return f"{path} is not a schedlab store: {text}"


class Store(StoreReads):
    def __init__(self, path: Path, create: bool = True, read_only: bool = False) -> None:
        """Open (or, with ``create``, make) a store. ``read_only`` never writes to the file:
        a store of an older schema is then migrated in memory for this reader only."""
        self.path = Path(path)
        self.read_only = read_only
        self.lock = threading.Lock()
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory; --store takes a store file")
        if not self.path.exists() and (not create or read_only):
            raise StoreError(f"no store at {self.path}; run `schedlab run` on the study first")
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if read_only:
            # With no writer about (no -wal file), opening as immutable keeps SQLite from
            # leaving its -wal and -shm files beside the store: a reader writes nothing.
            quiet = not Path(f"{self.path}-wal").exists()
            uri = f"file:{self.path.resolve()}?mode=ro" + ("&immutable=1" if quiet else "")
            self.conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        else:
            # Shared with a fleet's shard threads, which save checkpoints under ``self.lock``.
            self.conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
        try:
            self._check_or_create()
            if not read_only:
                self._check_intact()
        except sqlite3.DatabaseError as err:
            self.conn.close()
            raise StoreError(describe_error(self.path, err)) from err

    def _check_intact(self) -> None:
        """``PRAGMA quick_check`` before a command writes: a damaged store is named as such,
        not written into further (about 0.1 s per 100 MB)."""
        problems = [row[0] for row in self.conn.execute("PRAGMA quick_check(1)")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(f"database disk image is malformed ({problems[0]})")

    def _check_or_create(self) -> None:
        if not self.read_only:
            # Another program's SQLite file is refused before anything is written to it (WAL
            # mode is written into the file's header).
            names = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
            if names:
                self._version(self.conn, names)
            self.conn.execute("PRAGMA journal_mode=WAL")
        # BEGIN IMMEDIATE takes the write lock first, so two processes opening a new file
        # together create the schema once: the second waits, then finds it made.
        with self._transaction(write=not self.read_only) as c:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
            if not tables and not self.read_only:
                create(c)
                return
            version = self._version(c, tables)
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer schedlab (store schema "
                    f"{version}, this schedlab reads {SCHEMA_VERSION}); upgrade schedlab"
                )
            if version not in range(1, SCHEMA_VERSION):
                raise StoreError(
                    f"{self.path} has store schema {version}; this schedlab reads schemas 1 "
                    f"to {SCHEMA_VERSION}"
                )
            if not self.read_only:
                migrate(c, version)
                return
        self._migrate_in_memory(version)

    def _version(self, c: sqlite3.Connection, tables: set[str]) -> int:
        if "meta" not in tables:
            raise StoreError(f"{self.path} is an SQLite file but not a schedlab store")
        row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate_in_memory(self, version: int) -> None:
        memory = sqlite3.connect(":memory:", isolation_level=None)
        self.conn.backup(memory)
        self.conn.close()
        self.conn = memory
        with self._transaction() as c:
            migrate(c, version)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        try:
            self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:  # SQLite rolls back by itself on a full disk
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as err:
            if "full" in str(err):
                raise DiskFullError(self.path, err) from err
            raise

    def register_plan(self, name: str, spec: Mapping[str, Any], plan: Iterable[PlannedRun]) -> str:
        """Record a study's spec and its planned runs; returns the plan's id.

        Registration appends: runs already known keep their state, and plans registered
        before (another file of the same name, an earlier version) are kept.
        """
        plan_id = plan_id_of(dict(spec))
        with self._transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO studies VALUES (?, ?, ?, ?)",
                (plan_id, name, json.dumps(spec, sort_keys=True), time.time()),
            )
            for position, run in enumerate(plan):
                _insert_run(c, run)
                c.execute(
                    "INSERT OR IGNORE INTO plan_runs VALUES (?, ?, ?, ?)",
                    (plan_id, run.label, run.run_id, position),
                )
        return plan_id

    def register_trials(self, trials: Iterable[tuple[str, int, PlannedRun]]) -> None:
        """Record the runs of tuning trials: (search, trial number, run) each."""
        with self._transaction() as c:
            for search, trial, run in trials:
                _insert_run(c, run)
                c.execute(
                    "INSERT OR IGNORE INTO trials VALUES (?, ?, ?, ?)",
                    (search, trial, run.seed, run.run_id),
                )

    def register_branches(self, branches: Iterable[tuple[str, str, int]]) -> None:
        """Record branch runs: (run id, its trunk's run id, the trunk's step it starts from)
        each; the trunk then keeps its checkpoint at that step until they have committed."""
        with self._transaction() as c:
            for run_id, parent, step in branches:
                c.execute("INSERT OR IGNORE INTO branches VALUES (?, ?, ?)", (run_id, parent, step))
                c.execute(
                    "INSERT OR IGNORE INTO branch_points (run_id, step) VALUES (?, ?)",
                    (parent, step),
                )

    def status(self, run_id: str) -> str | None:
        row = self.conn.execute(
            "SELECT status, owner, lease_expires FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return shown_status(row[0], row[1], row[2], time.time()) if row else None

    def claim(
        self, run_id: str, owner: str, lease_s: float, host: str, versions: Mapping[str, str]
    ) -> bool:
        """Take a pending, failed or stale run for ``owner``; False when the claim loses."""
        now = time.time()
        with self._transaction() as c:
            cursor = c.execute(
                f"UPDATE runs SET status = '{RUNNING}', owner = ?, lease_expires = ?, "
                "attempts = attempts + 1, started_at = ?, host = ?, versions = ?, error = NULL "
                f"WHERE run_id = ? AND (status IN ('{PENDING}', '{FAILED}') "
                f"OR (status = '{RUNNING}' AND (lease_expires IS NULL OR lease_expires < ?)))",
                (owner, now + lease_s, now, host, json.dumps(dict(versions)), run_id, now),
            )
            return cursor.rowcount == 1

    def expire_lease(self, run_id: str, owner: str) -> bool:
        """End a running run's lease now if ``owner`` (known to be dead) still holds it: a
        compare-and-set, so a lease another driver took since ``owner`` was read stays. True
        when it expired one."""
        with self._transaction() as c:
            return (
                c.execute(
                    f"UPDATE runs SET lease_expires = 0 WHERE run_id = ? AND owner = ? "
                    f"AND status = '{RUNNING}'",
                    (run_id, owner),
                ).rowcount
                == 1
            )

    def running(self) -> list[tuple[str, str | None, float | None]]:
        """(run id, owner, lease expiry) of every run marked running."""
        return self.conn.execute(
            f"SELECT run_id, owner, lease_expires FROM runs WHERE status = '{RUNNING}'"
        ).fetchall()

    def renew(self, owner: str, lease_s: float) -> int:
        """Extend the lease of every run ``owner`` holds; returns how many it holds."""
        with self._transaction() as c:
            return c.execute(
                f"UPDATE runs SET lease_expires = ? WHERE owner = ? AND status = '{RUNNING}'",
                (time.time() + lease_s, owner),
            ).rowcount

    def _owned(self, c: sqlite3.Connection, run_id: str, owner: str) -> bool:
        row = c.execute("SELECT status, owner FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row is not None and row[0] == RunStatus.RUNNING and row[1] == owner

    def release(self, run_id: str, owner: str, reason: str) -> None:
        """Put a run ``owner`` holds back to pending (Ctrl-C)."""
        with self._transaction() as c:
            if self._owned(c, run_id, owner):
                c.execute(
                    f"UPDATE runs SET status = '{PENDING}', error = ?, owner = NULL, "
                    "lease_expires = NULL WHERE run_id = ?",
                    (reason, run_id),
                )

    def mark_failed(self, run_id: str, owner: str, error: str) -> bool:
        with self._transaction() as c:
            if not self._owned(c, run_id, owner):
                return False
            c.execute(
                f"UPDATE runs SET status = '{FAILED}', error = ?, finished_at = ?, owner = NULL, "
                "lease_expires = NULL WHERE run_id = ?",
                (error, time.time(), run_id),
            )
            return True

    def finish(self, run_id: str, owner: str, commit: Commit) -> bool:
        """Commit a finished run atomically; False (nothing written) if ``owner`` lost it."""
        if commit.status not in FINISHED:
            raise ValueError(f"finish takes status done or diverged, got {commit.status!r}")
        with self._transaction() as c:
            if not self._owned(c, run_id, owner):
                return False
            c.execute("DELETE FROM curves WHERE run_id = ?", (run_id,))
            c.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))
            c.execute(
                "INSERT INTO curves VALUES (?, ?, ?, ?)",
                (
                    run_id,
                    encode_array(commit.losses.astype(np.float32)),
                    encode_array(commit.lrs),
                    encode_array(commit.heldout_curve),
                ),
            )
            if commit.weights is not None:
                # Weights barely compress; level 1 saves time, not space.
                raw, ema = (encode_array(w, level=1) for w in commit.weights)
                c.execute("INSERT OR REPLACE INTO weights VALUES (?, ?, ?)", (run_id, raw, ema))
            self._write_measurements(c, run_id, commit.measurements, commit.samples)
            write_snapshots(c, run_id, commit.snapshots)
            c.execute(
                "UPDATE runs SET status = ?, diverged_at = ?, error = ?, training_time = ?, "
                "finished_at = ?, owner = NULL, lease_expires = NULL, resumed_from = ? "
                "WHERE run_id = ?",
                (
                    str(commit.status),
                    commit.diverged_at,
                    "; ".join(commit.notes) or None,
                    commit.training_time,
                    time.time(),
                    commit.resumed_from,
                    run_id,
                ),
            )
            free_branch_point(c, run_id)
            return True

    def save_checkpoint(
        self,
        run_id: str,
        step: int,
        state: bytes,
        snapshots: Iterable[Snapshot] = (),
        training_time: float | None = None,
    ) -> None:
        """Keep ``state`` as the run's latest checkpoint (from any thread), and those of its
        post-hoc EMA snapshots not stored yet. Any checkpoint of a run is a point on its one
        trajectory, so whoever writes last is right. At a step a branch starts from (one not
        committed yet), it is also kept there, with the ``training_time`` it had."""
        now = time.time()
        with self.lock, self._transaction() as c:
            write_snapshots(c, run_id, snapshots)
            c.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)", (run_id, step, state, now)
            )
            c.execute(
                "UPDATE branch_points SET state = ?, training_time = ?, saved_at = ? "
                f"WHERE run_id = ? AND step = ? AND state IS NULL AND {_BRANCH_UNCOMMITTED}",
                (state, training_time, now, run_id, step, run_id, step),
            )

    def reclaim_space(self) -> bool:
        """VACUUM when over a quarter of the file is free pages (dropped checkpoints leave up to
        a fleet's worth) and no run holds a checkpoint; False when there was nothing to
        reclaim or another process was using the store (it is tried again after the next run)."""
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        held = self.conn.execute(
            "SELECT (SELECT count(*) FROM checkpoints) + "
            "(SELECT count(*) FROM branch_points WHERE state IS NOT NULL)"
        ).fetchone()[0]
        if held or free * 4 <= pages:
            return False
        try:
            with self.lock:
                self.conn.execute("VACUUM")
        except sqlite3.OperationalError:  # another driver's transaction: not now
            return False
        return True

    def add_sweep(self, run_id: str, rows: Iterable[tuple[float, str, str, float]]) -> None:
        """Measurements of a run's post-hoc EMAs: (EMA std, metric, measurement key, value)."""
        now = time.time()
        with self._transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO ema_sweep VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (run_id, std, metric, mkey, float(v) if np.isfinite(v) else None, now)
                    for std, metric, mkey, v in rows
                ],
            )

    def add_measurements(
        self,
        run_id: str,
        measurements: Mapping[str, tuple[str, float]],
        samples: tuple[str, np.ndarray, float] | None,
    ) -> None:
        """Measurements of a finished run, made later from its stored weights and samples."""
        with self._transaction() as c:
            self._write_measurements(c, run_id, measurements, samples)

    def _write_measurements(
        self,
        c: sqlite3.Connection,
        run_id: str,
        measurements: Mapping[str, tuple[str, float]],
        samples: tuple[str, np.ndarray, float] | None,
    ) -> None:
        now = time.time()
        c.executemany(
            "INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?)",
            [
                (run_id, metric, mkey, float(v) if np.isfinite(v) else None, now)
                for metric, (mkey, v) in measurements.items()
            ],
        )
        if samples is not None:
            skey, points, seconds = samples
            c.execute(
                "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)",
                (run_id, skey, encode_array(points.astype(np.float32)), seconds),
            )


# A branch from the trunk (?, step ?) has not committed yet.
_BRANCH_UNCOMMITTED = (
    "EXISTS (SELECT 1 FROM branches b JOIN runs r ON r.run_id = b.run_id "
    f"WHERE b.parent = ? AND b.step = ? AND r.status NOT IN ({_FINISHED}))"
)


def free_branch_point(c: sqlite3.Connection, run_id: str) -> None:
    """Drop the state of the trunk checkpoint ``run_id`` branched from once every branch from it
    has committed (its step and training time stay)."""
    row = c.execute("SELECT parent, step FROM branches WHERE run_id = ?", (run_id,)).fetchone()
    if row is not None:
        c.execute(
            "UPDATE branch_points SET state = NULL WHERE run_id = ? AND step = ? "
            f"AND NOT {_BRANCH_UNCOMMITTED}",
            (*row, *row),
        )


def write_snapshots(c: sqlite3.Connection, run_id: str, snapshots: Iterable[Snapshot]) -> None:
    """A run's post-hoc EMA snapshots not stored yet. One stored already (by a checkpoint, or by
    an earlier attempt at the run) is its twin, bitwise: training is deterministic."""
    stored = set(c.execute("SELECT std, step FROM snapshots WHERE run_id = ?", (run_id,)))
    c.executemany(
        "INSERT INTO snapshots VALUES (?, ?, ?, ?)",
        [
            (run_id, s.std, s.step, encode_array(s.weights, level=1))
            for s in snapshots
            if (s.std, s.step) not in stored
        ],
    )


def _insert_run(c: sqlite3.Connection, run: PlannedRun) -> None:
    """A planned run, pending, unless the store knows it already."""
    c.execute(
        "INSERT OR IGNORE INTO runs (run_id, dataset, schedule, params, seed, settings, engine, "
        f"status) VALUES (?, ?, ?, ?, ?, ?, ?, '{PENDING}')",
        (
            run.run_id,
            run.dataset,
            run.schedule,
            json.dumps(run.params, sort_keys=True),
            run.seed,
            json.dumps(run.settings, sort_keys=True),
            run.engine,
        ),
    )
