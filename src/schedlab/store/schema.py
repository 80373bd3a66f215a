"""The store's tables (schema 6) and the migrations from schemas 1 (schedlab 0.1) to 5.

Schema 2 separated a run's training (``runs``, ``curves``, ``weights``: keyed by the training
identity) from its measurements (``measurements``, ``samples``: keyed by the run and a
measurement key), keeps every registered plan (``studies``, ``plan_runs``: appended, never
deleted), and records each run's engine, its claims (``attempts``) and its lease. Schema 3
adds each run's held-out EMA loss curve (``curves.heldout``: [m, 2] of steps and losses).
Schema 4 adds the runs of tuning trials (``trials``: a search's trial number and tuning seed ->
the run), apart from the plans, whose runs are the ones a report ranks. Schema 5 adds fleet
checkpoints (``checkpoints``: a run in training's latest state, dropped when it finishes) and
the step each run resumed at (``runs.resumed_from``; NULL for runs trained before it).
Schema 6 adds post-hoc EMA: each run's snapshots of its tracked EMAs (``snapshots``) and the
measurements of the EMAs formed from them (``ema_sweep``, keyed by the EMA's relative std).
Schema 7 adds cooldown branches: each branch run's trunk and branch step (``branches``) and the
trunk's checkpoints kept at those steps (``branch_points``: the state is NULL until saved and
again once every branch from it has committed; the trunk's training time there stays).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from typing import Any

from schedlab.store.status import STORED, RunStatus

SCHEMA_VERSION = 7

_STATUS_CHECK = ", ".join(f"'{s}'" for s in STORED)
TABLES = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE studies (
        plan_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        registered_at REAL NOT NULL
    )""",
    f"""CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        dataset TEXT NOT NULL,
        schedule TEXT NOT NULL,
        params TEXT NOT NULL,
        seed INTEGER NOT NULL,
        settings TEXT NOT NULL,
        engine TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ({_STATUS_CHECK})),
        error TEXT,
        diverged_at INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        owner TEXT,
        lease_expires REAL,
        training_time REAL,
        started_at REAL,
        finished_at REAL,
        host TEXT,
        versions TEXT,
        origin TEXT,
        resumed_from INTEGER
    )""",
    """CREATE TABLE plan_runs (
        plan_id TEXT NOT NULL REFERENCES studies(plan_id),
        label TEXT NOT NULL,
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        position INTEGER NOT NULL,
        PRIMARY KEY (plan_id, label, run_id)
    )""",
    """CREATE TABLE measurements (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        metric TEXT NOT NULL,
        mkey TEXT NOT NULL,
        value REAL,
        measured_at REAL NOT NULL,
        PRIMARY KEY (run_id, metric, mkey)
    )""",
    """CREATE TABLE curves (
        run_id TEXT PRIMARY KEY REFERENCES runs(run_id), loss BLOB, lr BLOB, heldout BLOB
    )""",
    """CREATE TABLE weights (
        run_id TEXT PRIMARY KEY REFERENCES runs(run_id), raw BLOB NOT NULL, ema BLOB NOT NULL
    )""",
    """CREATE TABLE samples (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        skey TEXT NOT NULL,
        points BLOB NOT NULL,
        seconds REAL,
        PRIMARY KEY (run_id, skey)
    )""",
    "CREATE INDEX runs_by_status ON runs(status)",
]
TRIALS_TABLE = """CREATE TABLE trials (
    search TEXT NOT NULL,
    trial INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    PRIMARY KEY (search, trial, seed)
)"""
TABLES.append(TRIALS_TABLE)
CHECKPOINTS_TABLE = """CREATE TABLE checkpoints (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
    step INTEGER NOT NULL,
    state BLOB NOT NULL,
    saved_at REAL NOT NULL
)"""
TABLES.append(CHECKPOINTS_TABLE)
SNAPSHOTS_TABLE = """CREATE TABLE snapshots (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    std REAL NOT NULL,
    step INTEGER NOT NULL,
    weights BLOB NOT NULL,
    PRIMARY KEY (run_id, std, step)
)"""
EMA_SWEEP_TABLE = """CREATE TABLE ema_sweep (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    ema_std REAL NOT NULL,
    metric TEXT NOT NULL,
    mkey TEXT NOT NULL,
    value REAL,
    measured_at REAL NOT NULL,
    PRIMARY KEY (run_id, ema_std, metric, mkey)
)"""
TABLES += [SNAPSHOTS_TABLE, EMA_SWEEP_TABLE]
BRANCHES_TABLE = """CREATE TABLE branches (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
    parent TEXT NOT NULL REFERENCES runs(run_id),
    step INTEGER NOT NULL
)"""
BRANCH_POINTS_TABLE = """CREATE TABLE branch_points (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    step INTEGER NOT NULL,
    state BLOB,
    training_time REAL,
    saved_at REAL,
    PRIMARY KEY (run_id, step)
)"""
TABLES += [BRANCHES_TABLE, BRANCH_POINTS_TABLE]


def create(conn: sqlite3.Connection) -> None:
    """The tables of the current schema (inside the caller's transaction)."""
    for statement in TABLES:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """A store of schema ``version`` brought to the current one, inside the caller's
    transaction."""
    if version == 1:
        migrate_from_1(conn)
        return
    if version == 2:  # schema 3: curves get a held-out column; older runs have none
        conn.execute("ALTER TABLE curves ADD COLUMN heldout BLOB")
    if version <= 3:
        conn.execute(TRIALS_TABLE)  # schema 4: no trial before it
    if version <= 4:
        conn.execute("ALTER TABLE runs ADD COLUMN resumed_from INTEGER")  # schema 5
        conn.execute(CHECKPOINTS_TABLE)
    if version <= 5:
        conn.execute(SNAPSHOTS_TABLE)  # schema 6
        conn.execute(EMA_SWEEP_TABLE)
    conn.execute(BRANCHES_TABLE)  # schema 7
    conn.execute(BRANCH_POINTS_TABLE)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


def migrate_from_1(conn: sqlite3.Connection) -> None:
    """Schema 1 -> current inside the caller's transaction: every run kept under its new id.

    Schema 1 hashed eval settings into a run's id and did not record the engine. A run keeps
    its status, curves, samples and metrics; its metrics go under the measurement keys of the
    eval settings it was measured with; its engine is the one `run` chooses by default (fleet,
    or loop for schedule-free) and ``origin`` says it came from schema 1. Schema 1 kept no
    weights, so a migrated run can be measured again only from its stored samples.
    """
    old = ("studies", "runs", "study_runs", "metrics", "curves", "samples")
    for table in old:
        conn.execute(f"ALTER TABLE {table} RENAME TO v1_{table}")
    conn.execute("DELETE FROM meta")
    conn.execute("DROP TABLE meta")
    create(conn)
    new_ids: dict[str, str] = {}
    for row in conn.execute(
        "SELECT run_id, dataset, schedule, params, seed, settings, status, error, diverged_at, "
        "attempts, started_at, finished_at, host, versions FROM v1_runs"
    ).fetchall():
        old_id, dataset, schedule, params, seed, settings_text = row[:6]
        settings = json.loads(settings_text)
        eval_settings = {**V1_EVAL_DEFAULTS, **settings.get("eval", {})}
        engine = "loop" if schedule == "schedule_free" else "fleet"
        identity = {
            "dataset": dataset,
            "dim": 2,  # schema 1 knew 2D datasets only
            "schedule": schedule,
            "params": json.loads(params),
            "seed": seed,
            "data": settings["data"],
            "train": settings["train"],
            "engine": engine,
            "numeric_version": V1_NUMERIC_VERSION,
        }
        new_id = new_ids[old_id] = _digest(identity, 20)
        metrics = dict(
            conn.execute("SELECT key, value FROM v1_metrics WHERE run_id = ?", (old_id,))
        )
        status = RunStatus.PENDING if row[6] == RunStatus.RUNNING else row[6]
        training = {k: identity[k] for k in ("data", "train")}
        conn.execute(
            "INSERT OR IGNORE INTO runs (run_id, dataset, schedule, params, seed, settings, "
            "engine, status, error, diverged_at, attempts, training_time, started_at, "
            "finished_at, host, versions, origin) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                new_id,
                dataset,
                schedule,
                params,
                seed,
                json.dumps(training, sort_keys=True),
                engine,
                status,
                *row[7:10],
                metrics.get("training_time"),
                *row[10:14],
                f"schema 1 run {old_id}",
            ),
        )
        for key, value in metrics.items():
            if key in V1_METRIC_READS:
                conn.execute(
                    "INSERT OR IGNORE INTO measurements VALUES (?, ?, ?, ?, ?)",
                    (new_id, key, _v1_measurement_key(key, eval_settings), value, time.time()),
                )
        sample_key = _digest({"samples": eval_settings["samples"], "version": 1}, 16)
        conn.execute(
            "INSERT OR IGNORE INTO samples SELECT ?, ?, points, ? FROM v1_samples WHERE run_id = ?",
            (new_id, sample_key, metrics.get("inference_time"), old_id),
        )
        conn.execute(
            "INSERT OR IGNORE INTO curves (run_id, loss, lr) "
            "SELECT ?, loss, lr FROM v1_curves WHERE run_id = ?",
            (new_id, old_id),
        )
    for name, spec, updated_at in conn.execute("SELECT * FROM v1_studies").fetchall():
        plan_id = plan_id_of(json.loads(spec))
        conn.execute(
            "INSERT OR IGNORE INTO studies VALUES (?, ?, ?, ?)", (plan_id, name, spec, updated_at)
        )
        for label, old_id, position in conn.execute(
            "SELECT label, run_id, position FROM v1_study_runs WHERE study = ?", (name,)
        ).fetchall():
            if old_id in new_ids:
                conn.execute(
                    "INSERT OR IGNORE INTO plan_runs VALUES (?, ?, ?, ?)",
                    (plan_id, label, new_ids[old_id], position),
                )
    for table in old:
        conn.execute(f"DROP TABLE v1_{table}")


def plan_id_of(spec: dict[str, Any]) -> str:
    """A registered plan's id: the hash of the validated study it came from."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


# What the schema-1 migration needs, frozen as it was when schema 2 came (a migration never
# reads a live registry: a later change to a metric or to run ids must not move old runs).
V1_NUMERIC_VERSION = 2  # the run ids of schema 2 (plan.NUMERIC_VERSION then)
V1_EVAL_DEFAULTS = {"samples": 10_000, "heldout": 10_000}
V1_METRIC_READS = {  # the schema-1 metrics (all at version 1) and the eval settings they read
    "kl_divergence": ("samples",),
    "eval_loss": (),
    "eval_loss_heldout": ("heldout",),
    "eval_loss_heldout_ema": ("heldout",),
    "training_time": (),
    "inference_time": ("samples",),
    "kl_floor": ("samples",),
}


def _digest(value: object, length: int) -> str:
    """run ids (20) and measurement and sample keys (16), as schema 2 computed them."""
    if length == 20:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    else:
        text = json.dumps(value, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _v1_measurement_key(metric: str, eval_settings: dict[str, Any]) -> str:
    used = {name: eval_settings[name] for name in V1_METRIC_READS[metric]}
    return _digest({"metric": metric, "version": 1, "eval": used}, 16)
