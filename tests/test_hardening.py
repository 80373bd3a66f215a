"""Cases from a careful user's attack: each failed before its fix (see the closing notes)."""

import hashlib
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
        (["run", "--bogus"], "error: No such option: --bogus (see `schedlab run --help`)"),
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
