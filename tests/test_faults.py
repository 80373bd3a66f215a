"""Filesystem and store faults reach the user as one `error:` line naming the file and the
cause, with nothing corrupted: permissions (run as an unprivileged user), a full disk (a tiny
tmpfs), corrupted stores, and an unforeseen error."""

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schedlab.cli import app

SCHEDLAB = str(Path(sys.executable).with_name("schedlab"))
TINY = Path(__file__).parent / "fixtures" / "tiny_study.toml"
SMALL_TRAIN = ["train", "--steps", "3", "--set", "n=300", "--set", "samples=20", "--set",
               "heldout=20"]  # fmt: skip
WRITERS = [
    (["export", "tiny.toml", "--out", "{d}/x.csv"], "{d}/x.csv"),
    (["export", "tiny.toml", "--format", "parquet", "--out", "{d}/x.parquet"], "{d}/x.parquet"),
    (["export", "tiny.toml", "--format", "tensorboard", "--out", "{d}/tb"], "{d}/tb"),
    (["export", "tiny.toml", "--format", "mlflow", "--out", "{d}/ml"], "{d}/ml"),
    (["report", "tiny.toml", "--out", "{d}/report"], "{d}/report"),
    ([*SMALL_TRAIN, "--out", "{d}/one"], "{d}/one"),
    (["schedules", "plot", "cosine", "--out", "{d}/lr.svg"], "{d}/lr.svg"),
]


def one_error_line(result: subprocess.CompletedProcess[str], *parts: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def study_dir(tiny_trained):
    """A world-readable folder with the tiny study and its trained store."""
    folder = Path(tempfile.mkdtemp(prefix="schedlab-faults-", dir="/tmp"))
    os.chmod(folder, 0o755)
    study, store = tiny_trained
    shutil.copy(study, folder / "tiny.toml")
    (folder / "schedlab-runs").mkdir()
    shutil.copy(store, folder / "schedlab-runs" / "tiny.sqlite")
    for path in folder.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    (folder / ".mpl").mkdir()
    os.chmod(folder / ".mpl", 0o777)  # matplotlib's cache, for the unprivileged user
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_nobody(folder: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SCHEDLAB, *args]
    env = {**os.environ, "HOME": str(folder), "MPLCONFIGDIR": str(folder / ".mpl")}
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="switching to an unprivileged user needs root and setpriv",
)


@needs_root
@pytest.mark.slow
@pytest.mark.parametrize(("args", "target"), WRITERS)
def test_a_folder_one_may_not_write_is_one_line(study_dir, args, target):
    shut = study_dir / "shut"
    shut.mkdir(mode=0o555)
    os.chmod(shut, 0o555)
    result = as_nobody(study_dir, [a.format(d=shut) for a in args])
    assert result.returncode == 1
    one_error_line(result, target.format(d=shut), "Permission denied")
    assert list(shut.iterdir()) == []


@needs_root
@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "measure"])
def test_a_store_one_may_not_write_is_named_so_and_reads_still_work(study_dir, command):
    store = study_dir / "schedlab-runs" / "tiny.sqlite"
    before = store.read_bytes()
    result = as_nobody(study_dir, [command, "tiny.toml"])
    assert result.returncode == 2
    one_error_line(result, "schedlab-runs/tiny.sqlite cannot be written", "permissions")
    for read in (["status", "tiny.toml"], ["export", "tiny.toml", "--out", "-"]):
        assert as_nobody(study_dir, read).returncode == 0
    assert store.read_bytes() == before


@contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on a fresh folder; skipped where mounting is not allowed."""
    where = Path(tempfile.mkdtemp(prefix="schedlab-tmpfs-", dir="/tmp"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


@pytest.fixture
def full_disk():
    """A 256 KiB tmpfs, filled up."""
    with tmpfs("256k") as where:
        with (where / "filler").open("wb") as f, pytest.raises(OSError):
            f.write(b"\0" * (1 << 20))
        yield where


@pytest.mark.slow
@pytest.mark.parametrize(("args", "target"), WRITERS)
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(
    study_dir, full_disk, args, target
):
    result = subprocess.run(
        [SCHEDLAB, *(a.format(d=full_disk) for a in args)],
        cwd=study_dir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    one_error_line(result, target.format(d=full_disk))
    assert "No space left on device" in result.stderr or "disk is full" in result.stderr
    # No temporary file, half a report or half a file (a folder `train --out` made may stay,
    # empty; MLflow's database is written run by run and resumes).
    left = {p.name for p in full_disk.iterdir() if not (p.is_dir() and not any(p.iterdir()))}
    assert left - {"filler", "ml"} == set()


@pytest.mark.slow
def test_a_full_disk_under_the_store_is_one_line(study_dir, full_disk):
    result = subprocess.run(
        [SCHEDLAB, "run", "tiny.toml", "--store", str(full_disk / "s.sqlite")],
        cwd=study_dir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    one_error_line(result, f"{full_disk}/s.sqlite: the disk is full", "free some space")


def corrupt_pages(store: Path) -> None:
    with store.open("r+b") as f:
        f.seek(8192)
        f.write(b"\xde\xad" * 2000)


@pytest.mark.parametrize("damage", ["pages", "garbage"])
@pytest.mark.parametrize("command", ["status", "run", "report", "export"])
def test_a_corrupted_store_or_another_file_is_named_so_and_left_alone(study_dir, damage, command):
    store = study_dir / "schedlab-runs" / "tiny.sqlite"
    if damage == "pages":
        corrupt_pages(store)
    else:
        store.write_bytes(b"not a database, just bytes" * 100)
    before = store.read_bytes()
    extra = ["--out", str(study_dir / "x.csv")] if command == "export" else []
    result = subprocess.run(
        [SCHEDLAB, command, "tiny.toml", *extra], cwd=study_dir, capture_output=True, text=True
    )
    assert result.returncode == 2
    named = "schedlab-runs/tiny.sqlite "
    if damage == "pages":
        one_error_line(result, named + "is corrupted", "restore it from a backup")
    else:
        one_error_line(result, named + "is not a schedlab store", "not a database")
    assert store.read_bytes() == before


def test_an_unforeseen_error_is_one_line_and_exit_1(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("something nobody foresaw\nwith a second line")

    monkeypatch.setattr("schedlab.cli.export.export_rows", broken)
    (tmp_path / "tiny.toml").write_text(TINY.read_text())
    runner = CliRunner()
    ran = runner.invoke(app, ["run", str(tmp_path / "tiny.toml"), "--store", str(tmp_path / "s")])
    assert ran.exit_code == 0, ran.output
    args = ["export", str(tmp_path / "tiny.toml"), "--store", str(tmp_path / "s"), "--out", "-"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr == "error: RuntimeError: something nobody foresaw\n"


def test_measure_dry_run_lists_what_it_would_measure_and_writes_nothing(study_dir):
    store = study_dir / "schedlab-runs" / "tiny.sqlite"
    more = study_dir / "more.toml"
    more.write_text((study_dir / "tiny.toml").read_text().replace("samples = 50", "samples = 60"))
    os.chmod(store, 0o444)
    before = store.read_bytes()
    result = subprocess.run(
        [SCHEDLAB, "measure", "more.toml", "--store", str(store), "--dry-run"],
        cwd=study_dir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all("kl_divergence" in line for line in lines)
    assert "eval_loss_heldout_ema" not in result.stdout  # no sample count in its key
    assert result.stderr.startswith("4 runs would be measured; nothing written.")
    assert store.read_bytes() == before
    assert sorted(p.name for p in store.parent.iterdir()) == ["tiny.sqlite"]  # no -wal, -shm


@pytest.fixture
def small_disk():
    """A 2 MiB tmpfs, empty: room for a store, not for a study's weights."""
    with tmpfs("2m") as where:
        yield where


@pytest.mark.slow
def test_a_disk_that_fills_while_training_stops_the_study_with_its_runs_pending(
    tmp_path, small_disk
):
    """Before: exit 1 with no error line, and every run marked failed with "cannot rollback -
    no transaction is active" (SQLite had rolled back by itself on the full disk)."""
    study = tmp_path / "full.toml"
    text = TINY.read_text().replace("emb_size = 8", "emb_size = 128")
    study.write_text(text.replace("hidden_size = 16", "hidden_size = 256"))
    store = small_disk / "s.sqlite"
    result = subprocess.run(
        [SCHEDLAB, "run", str(study), "--store", str(store)], capture_output=True, text=True
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{store}: disk full" in errors[0] and "free some space" in errors[0]
    status = subprocess.run(
        [SCHEDLAB, "status", str(study), "--store", str(store)], capture_output=True, text=True
    )
    assert status.returncode == 0 and "done" not in status.stdout and "failed" not in status.stdout
    assert status.stdout.count("2 pending") == 2
