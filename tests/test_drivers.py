"""Drivers sharing a store, partial re-runs, measuring without training, migration."""

import csv
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from schedlab import metrics as registry
from schedlab.cli import app
from schedlab.config.study import parse_study
from schedlab.execute.local import measure_study, run_study
from schedlab.metrics import Metric, sample_key
from schedlab.report.data import study_records
from schedlab.store.store import Store

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures"
STUDY = """name = "pair"
datasets = ["moons", "line"]
seeds = 2
[data]
n = 1500
[train]
steps = 60
batch_size = 100
emb_size = 16
hidden_size = 32
hidden_layers = 2
[eval]
samples = 150
heldout = 200
[[schedules]]
name = "cosine"
[[schedules]]
name = "step"
params = { step_size = 20, gamma = 0.5 }
"""
MEASURED = ("eval_loss", "eval_loss_heldout", "eval_loss_heldout_ema", "kl_divergence", "kl_floor")


def measurements(path):
    """Every stored measurement and weight blob, read with plain sqlite3."""
    with sqlite3.connect(path) as c:
        values = c.execute(
            "SELECT run_id, metric, mkey, value FROM measurements "
            "WHERE metric NOT IN ('training_time', 'inference_time') ORDER BY 1, 2, 3"
        ).fetchall()
        curves = c.execute("SELECT run_id, loss, lr FROM curves ORDER BY 1").fetchall()
        weights = c.execute("SELECT run_id, raw, ema FROM weights ORDER BY 1").fetchall()
    return values, curves, weights


def test_a_partial_rerun_equals_the_uninterrupted_study(tmp_path):
    study = parse_study(STUDY, "pair")
    full = tmp_path / "full.sqlite"
    with Store(full) as db:
        assert run_study(study, db).outcomes == {"done": 8}
    partial = tmp_path / "partial.sqlite"
    shutil.copy(full, partial)
    with sqlite3.connect(partial) as c:
        c.execute(
            "UPDATE runs SET status = 'pending' WHERE run_id IN "
            "(SELECT run_id FROM plan_runs WHERE position >= 5)"
        )
    with Store(partial) as db:
        # Three runs train again, as a fleet of three instead of inside the fleet of eight.
        assert run_study(study, db).outcomes == {"done": 3}
    assert measurements(partial) == measurements(full)


def test_two_drivers_on_one_store_train_every_run_once(tmp_path):
    path = tmp_path / "pair.toml"
    path.write_text(STUDY)
    store = tmp_path / "shared.sqlite"
    command = [sys.executable, "-m", "schedlab", "run", str(path), "--store", str(store)]
    env = {**os.environ, "COLUMNS": "150"}
    procs = [
        subprocess.Popen(
            [*command, "--fleet-size", "2"], env=env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    with Store(store) as db:
        records = study_records(db, "pair")[1]
    assert {r.status for r in records} == {"done"}
    assert [r.attempts for r in records] == [1] * 8
    trained = [
        int(o.split("this run: ")[1].split(" done")[0]) if " done" in o else 0 for o in outputs
    ]
    assert sum(trained) == 8, outputs


def test_changing_eval_samples_measures_again_and_trains_nothing(tmp_path):
    store = tmp_path / "s.sqlite"
    with Store(store) as db:
        run_study(parse_study(STUDY, "pair"), db)
        before = study_records(db, "pair")[1]
    more = parse_study(STUDY.replace("samples = 150", "samples = 250"), "pair")
    with Store(store) as db:
        summary = run_study(more, db)
        assert summary.outcomes == {} and summary.measured == 8 and summary.skipped == 8
        after = study_records(db, "pair")[1]
        samples, _ = db.samples(after[0].run_id, sample_key(more.eval))
    assert samples.shape == (250, 2)
    assert [r.attempts for r in after] == [1] * 8
    for old, new in zip(before, after, strict=True):
        assert old.run_id == new.run_id
        # Held-out losses read no sample count: the same measurement; KL is measured anew.
        assert new.metrics["eval_loss_heldout_ema"] == old.metrics["eval_loss_heldout_ema"]
        assert new.metrics["kl_divergence"] != old.metrics["kl_divergence"]
        assert np.isfinite(new.metrics["kl_divergence"])


def test_a_new_metric_is_one_registration_and_measure_computes_it(tmp_path, monkeypatch):
    store = tmp_path / "s.sqlite"
    study = parse_study(STUDY, "pair")
    with Store(store) as db:
        run_study(study, db)
    spread = Metric(
        "sample_spread",
        "Spread of the samples",
        "",
        "lower",
        3,
        frozenset({"samples"}),
        ("samples",),
        lambda ctx: float(ctx.samples()[0].std()),
    )
    monkeypatch.setitem(registry.METRICS, "sample_spread", spread)
    with Store(store) as db:
        assert measure_study(study, db).measured == 8
        records = study_records(db, "pair")[1]
        stored, _ = db.samples(records[0].run_id, sample_key(study.eval))
    assert records[0].metrics["sample_spread"] == pytest.approx(float(stored.std()))
    assert [r.attempts for r in records] == [1] * 8


def test_measure_command_and_export_columns(tmp_path):
    path = tmp_path / "pair.toml"
    path.write_text(STUDY)
    store = str(tmp_path / "s.sqlite")
    assert runner.invoke(app, ["run", str(path), "--store", store]).exit_code == 0
    path.write_text(STUDY.replace("heldout = 200", "heldout = 300"))
    result = runner.invoke(app, ["measure", str(path), "--store", store])
    assert result.exit_code == 0, result.output
    assert "8 runs measured" in result.stderr
    out = tmp_path / "runs.csv"
    assert (
        runner.invoke(app, ["export", str(path), "--store", store, "--out", str(out)]).exit_code
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert {r["engine"] for r in rows} == {"fleet"} and {r["attempts"] for r in rows} == {"1"}
    assert {r["eval.heldout"] for r in rows} == {"300"}
    assert all(float(r["eval_loss_heldout"]) > 0 for r in rows)


def migrated(tmp_path, schema):
    """A copy of the fixture store of an older ``schema``: read by `status` (which must not
    write), then migrated by `run`, which finds every run finished. (store, study file)."""
    store = tmp_path / f"v{schema}.sqlite"
    shutil.copy(FIXTURES / f"v{schema}_store.sqlite", store)
    study = str(FIXTURES / f"v{schema}_study.toml")
    original = store.read_bytes()
    status = runner.invoke(app, ["status", study, "--store", str(store)], terminal_width=150)
    assert status.exit_code == 0, status.output
    assert status.stdout.count("1 done") == 6
    assert store.read_bytes() == original  # a read-only command migrated a copy in memory
    assert [p.name for p in tmp_path.iterdir()] == [store.name]  # no -wal or -shm left
    result = runner.invoke(app, ["run", study, "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "4 runs planned, 4 already finished; this run: nothing" in result.stderr
    con = sqlite3.connect(store)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("7",)
    assert con.execute("SELECT count(*) FROM trials").fetchone() == (0,)  # schema 4's table
    assert con.execute("SELECT count(*) FROM checkpoints").fetchone() == (0,)  # schema 5
    assert con.execute("SELECT count(*) FROM snapshots").fetchone() == (0,)  # schema 6
    assert con.execute("SELECT count(*) FROM ema_sweep").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM branch_points").fetchone() == (0,)  # schema 7
    con.close()
    return store, study


def test_a_store_of_the_first_release_is_kept_and_reported(tmp_path):
    store, study = migrated(tmp_path, 1)
    with Store(store) as db:
        records = study_records(db, "v1fixture")[1]
    assert len(records) == 6 and {r.status for r in records} == {"done"}
    assert all(r.origin.startswith("schema 1 run ") for r in records)
    assert all(np.isfinite(r.metrics["kl_divergence"]) for r in records)
    out = tmp_path / "runs.csv"
    exported = runner.invoke(app, ["export", study, "--store", str(store), "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    assert all(r["origin"].startswith("schema 1 run ") for r in csv.DictReader(out.open()))
    report = runner.invoke(
        app, ["report", study, "--store", str(store), "--out", str(tmp_path / "r")]
    )
    assert report.exit_code == 0, report.output


def test_a_store_of_schema_2_is_kept_and_says_it_has_no_heldout_curves(tmp_path):
    store, study = migrated(tmp_path, 2)
    out = tmp_path / "runs.csv"
    exported = runner.invoke(app, ["export", study, "--store", str(store), "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(out.open()))
    assert all(float(r["eval_loss_heldout_ema"]) > 0 for r in rows)
    # Trained before runs recorded a held-out curve: no time to target, not a made-up one.
    assert {r["steps_to_target"] for r in rows} == {""} and {
        r["seconds_to_target"] for r in rows
    } == {""}
    report = runner.invoke(
        app, ["report", study, "--store", str(store), "--out", str(tmp_path / "r")]
    )
    assert report.exit_code == 0, report.output
    assert (
        "No run of this study recorded a held-out curve"
        in (tmp_path / "r" / "index.html").read_text()
    )


@pytest.mark.parametrize(
    ("schema", "column", "values"),
    [
        (3, "phase", {"final"}),  # made by the release before tuning
        (4, "resumed_from_step", {""}),  # before checkpoints: not recorded
        (5, "resumed_from_step", {"0"}),  # made by the release before post-hoc EMA
    ],
)
def test_a_store_of_schema_3_4_or_5_gains_the_new_tables_and_keeps_its_runs(
    tmp_path, schema, column, values
):
    store, study = migrated(tmp_path, schema)
    out = tmp_path / "runs.csv"
    exported = runner.invoke(app, ["export", study, "--store", str(store), "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"done"}
    assert {r[column] for r in rows} == values
    assert all(float(r["steps_to_target"]) > 0 for r in rows)  # its curves are kept


def test_a_report_shows_exactly_the_runs_its_file_plans(tmp_path):
    original, edited = tmp_path / "pair.toml", tmp_path / "edited.toml"
    original.write_text(STUDY)
    edited.write_text(STUDY.replace("steps = 60", "steps = 40"))  # the same name, other runs
    store = str(tmp_path / "s.sqlite")
    for path in (original, edited):
        assert runner.invoke(app, ["run", str(path), "--store", store]).exit_code == 0
    out, csv_file = tmp_path / "report", tmp_path / "runs.csv"
    result = runner.invoke(app, ["report", str(original), "--store", store, "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = runner.invoke(
        app, ["export", str(original), "--store", store, "--out", str(csv_file)]
    )
    assert exported.exit_code == 0, exported.output
    runs = list(csv.DictReader(csv_file.open()))
    assert {r["train.steps"] for r in runs} == {"60"}
    summary = [r for r in csv.DictReader((out / "summary.csv").open())]
    for row in (r for r in summary if r["metric"] == "eval_loss_heldout_ema"):
        cell = [
            float(r["eval_loss_heldout_ema"])
            for r in runs
            if r["schedule"] == row["schedule"] and r["dataset"] == row["dataset"]
        ]
        assert row["n"] == "2" and float(row["mean"]) == pytest.approx(np.mean(cell), rel=1e-12)
    page = (out / "index.html").read_text()
    assert "8 of 8 planned runs finished" in page
    assert "also holds 1 other configuration(s) of study pair" in page
    never_run = tmp_path / "never.toml"
    never_run.write_text(STUDY.replace("steps = 60", "steps = 50"))
    refused = runner.invoke(app, ["report", str(never_run), "--store", store])
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: no run of this 'pair' file is in ")
