"""Cases from a careful user's attack: each failed before its fix (see the closing notes)."""

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schedlab.cli import app
from schedlab.config.study import load_study
from schedlab.execute.driver import Driver
from schedlab.plan import expand
from schedlab.store.store import Store

TINY = Path(__file__).parent / "fixtures" / "tiny_study.toml"
SCHEDLAB = [sys.executable, "-m", "schedlab"]
runner = CliRunner()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def study_with(tmp_path: Path, old: str, new: str) -> Path:
    text = TINY.read_text()
    assert old in text
    path = tmp_path / "study.toml"
    path.write_text(text.replace(old, new))
    return path


def test_a_report_of_a_study_with_no_finished_run_says_so(tmp_path):
    """Before: `error: KeyError: 'cosine'` from the ranking section."""
    store = tmp_path / "s.sqlite"
    study = load_study(str(TINY))
    with Store(store) as db:
        Driver(db).register(study, expand(study))
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(TINY), "--store", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 planned runs not finished yet" in result.output
    assert "0 of 4 planned runs finished" in (out / "index.html").read_text()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("n = 500", "n = 1", "data.n: Input should be greater than or equal to 2"),
        ("seeds = 2", "seeds = [9223372036854775808]", "seeds must be distinct ints in [0, 2**63"),
        ("hidden_size = 16", "hidden_size = 1000000000", "hidden_size: Input should be less"),
        ("steps = 5", "steps = 5\ntimesteps = 1000000000000", "timesteps: Input should be less"),
        ("samples = 50", "samples = 10000000000000", "samples: Input should be less"),
    ],
)
def test_bad_values_are_refused_before_a_store_exists(tmp_path, old, new, message):
    """Before: accepted, then failing after the store existed (ZeroDivisionError, an
    OverflowError from SQLite, raw allocation errors)."""
    store = tmp_path / "s.sqlite"
    result = runner.invoke(app, ["run", str(study_with(tmp_path, old, new)), "--store", str(store)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not store.exists()


def test_a_model_too_large_for_the_machine_is_refused_by_name(tmp_path):
    study = study_with(tmp_path, "hidden_size = 16", "hidden_size = 60000\nhidden_layers = 200")
    study.write_text(study.read_text().replace("hidden_layers = 1\n", ""))
    result = runner.invoke(app, ["run", str(study), "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 2
    assert "has 720,013,620,002 parameters: one run needs about" in result.stderr
    with Store(tmp_path / "s.sqlite", create=False, read_only=True) as db:
        assert db.conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)


@pytest.mark.parametrize("every", ["0", "-1"])
def test_a_bad_checkpoint_interval_writes_no_store(tmp_path, every):
    store = tmp_path / "s.sqlite"
    args = ["run", str(TINY), "--store", str(store), "--checkpoint-every", every]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--checkpoint-every must be a positive int" in result.stderr
    assert not store.exists()


def test_an_ema_sweep_of_a_study_without_snapshots_writes_nothing(tiny_trained, tmp_path):
    study, trained = tiny_trained
    store = tmp_path / "s.sqlite"
    store.write_bytes(trained.read_bytes())
    before = digest(store)
    args = ["measure", str(study), "--store", str(store), "--ema-sweep", "0.05,0.1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "keeps no snapshots" in result.stderr
    assert digest(store) == before


def test_another_programs_sqlite_file_is_refused_unchanged(tmp_path):
    """Before: switched to WAL mode (its header rewritten) before "not a schedlab store"."""
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE notes (text TEXT)")
        c.execute("INSERT INTO notes VALUES ('mine')")
    c.close()
    before = digest(other)
    result = runner.invoke(app, ["run", str(TINY), "--store", str(other)])
    assert result.exit_code == 2 and "is an SQLite file but not a schedlab store" in result.stderr
    assert digest(other) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--bogus"], "error: No such option: --bogus"),
        (["run"], "error: Missing argument 'study'. (see `schedlab run --help`)"),
        (["bogus"], "error: No such command 'bogus'. (see `schedlab --help`)"),
        (["run", str(TINY), "--fleet-size", "abc"], "error: Invalid value for '--fleet-size'"),
    ],
)
def test_a_command_line_mistake_is_one_error_line_and_exit_2(args, message):
    """Before: Click's three-line usage box."""
    result = subprocess.run([*SCHEDLAB, *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(message), result.stderr
    assert result.stderr.rstrip().endswith("--help`)")


@pytest.mark.parametrize(
    ("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_outputs_follow_the_umask_and_a_later_write_removes_a_killed_ones_litter(
    tiny_trained, tmp_path, mask, file_mode, dir_mode
):
    """Before: CSVs were written 0600 and report folders 0700 whatever the umask, and the
    temporary files of a killed export or report stayed beside their target for good."""
    study, store = tiny_trained
    dead = "999999999"  # no such process
    (tmp_path / f".runs.csv.{dead}.x1.tmp").write_text("half a CSV")
    (tmp_path / f".report.{dead}.x2.tmp").mkdir()
    (tmp_path / f".report.{dead}.x2.tmp" / "index.html").write_text("half a report")
    mine = tmp_path / f".runs.csv.{os.getpid()}.x3.tmp"  # a live writer's: kept
    mine.write_text("in progress")
    command = (
        f"umask {mask:03o}; {sys.executable} -m schedlab export {study} --store {store} "
        f"--out {tmp_path}/runs.csv && {sys.executable} -m schedlab report {study} "
        f"--store {store} --out {tmp_path}/report"
    )
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["runs.csv", "report", mine.name])
    assert (tmp_path / "runs.csv").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "report").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "report" / "index.html").stat().st_mode & 0o777 == file_mode


def test_reads_find_a_studys_runs_whichever_engine_trained_them(tmp_path):
    """Before: a study run with --engine loop showed every run pending in status and export,
    and report said no run of the file was in the store, unless --engine loop was given."""
    store = str(tmp_path / "loop.sqlite")
    trained = runner.invoke(app, ["run", str(TINY), "--store", store, "--engine", "loop"])
    assert trained.exit_code == 0, trained.output
    status = runner.invoke(app, ["status", str(TINY), "--store", store])
    assert status.stdout.count("2 done") == 2 and "pending" not in status.stdout
    exported = runner.invoke(app, ["export", str(TINY), "--store", store, "--out", "-"])
    rows = exported.stdout.splitlines()[1:]
    assert len(rows) == 4 and all(",done," in row and ",loop," in row for row in rows)
    out = tmp_path / "report"
    report = runner.invoke(app, ["report", str(TINY), "--store", store, "--out", str(out)])
    assert report.exit_code == 0 and "not finished" not in report.output
    assert "4 of 4 planned runs finished" in (out / "index.html").read_text()
    asked = runner.invoke(app, ["status", str(TINY), "--store", store, "--engine", "fleet"])
    assert asked.stdout.count("2 pending") == 2  # an explicit --engine is obeyed
