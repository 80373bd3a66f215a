"""Studies: grid and ids, the store, resume after kill -9, divergence, bad input."""

import csv
import hashlib
import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from schedlab.cli import app
from schedlab.config.study import load_study, parse_study
from schedlab.execute import work
from schedlab.execute.local import run_study
from schedlab.metrics import sample_key
from schedlab.plan import expand, unique
from schedlab.report.data import study_records
from schedlab.store.schema import SCHEMA_VERSION
from schedlab.store.store import Store

runner = CliRunner()

SMALL = """
[data]
n = 2000
[train]
steps = 30
emb_size = 16
hidden_size = 32
hidden_layers = 2
[eval]
samples = 200
heldout = 200
"""
TINY = (
    'name = "tiny"\ndatasets = ["moons", "line"]\nseeds = 2\n'
    + SMALL
    + """
[[schedules]]
name = "cosine"
[[schedules]]
name = "step"
label = "step-fast"
params = { step_size = 10, gamma = 0.5 }
"""
)
DETERMINISTIC = (
    "eval_loss",
    "eval_loss_heldout",
    "eval_loss_heldout_ema",
    "kl_divergence",
    "kl_floor",
)


def runs_of(db, study):
    return study_records(db, study)[1]


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_expansion_and_ids():
    study = parse_study(TINY, "tiny")
    runs = expand(study)
    assert len(runs) == 2 * 2 * 2
    assert {(r.dataset, r.label, r.seed) for r in runs} == {
        (d, s, seed) for d in ("moons", "line") for s in ("cosine", "step-fast") for seed in (0, 1)
    }
    assert len({r.run_id for r in runs}) == 8
    assert runs[0].settings.train.steps == 30
    step = next(r for r in runs if r.label == "step-fast")
    assert step.schedule.params["step_size"] == 10 and step.schedule.params["gamma"] == 0.5


def test_reordering_changes_no_id_and_a_setting_changes_every_id():
    reordered = (
        'seeds = [1, 0]\ndatasets = ["line", "moons"]\nname = "tiny"\n'
        + SMALL
        + '[[schedules]]\nparams = { gamma = 0.5, step_size = 10 }\nlabel = "step-fast"\n'
        'name = "step"\n[[schedules]]\nname = "cosine"\n'
    )
    ids = {r.run_id for r in expand(parse_study(TINY, "a"))}
    assert {r.run_id for r in expand(parse_study(reordered, "b"))} == ids
    changed = parse_study(TINY.replace("n = 2000", "n = 2001"), "c")
    assert not ids & {r.run_id for r in expand(changed)}
    relabelled = parse_study(TINY.replace('label = "step-fast"', 'label = "other"'), "d")
    assert {r.run_id for r in expand(relabelled)} == ids


def test_presets():
    paper = load_study("paper")
    runs = expand(paper)
    assert len(runs) == 60 and paper.train.steps == 10_000 and paper.seed_list == [0, 1, 2]
    assert {r.dataset for r in runs} == {"circle", "dino", "line", "moons"}
    # The paper's baseline row is cosine: with paired seeds they are the same 12 runs.
    baseline = {r.run_id for r in runs if r.label == "baseline"}
    assert baseline == {r.run_id for r in runs if r.label == "cosine"}
    assert len(unique(runs)) == 48
    quick = load_study("quick")
    assert [e.display for e in quick.schedules] == [e.display for e in paper.schedules]
    assert quick.train.steps < paper.train.steps and len(quick.seed_list) < 3


def test_a_directory_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").mkdir()
    (tmp_path / "other").mkdir()
    assert load_study("paper").name == "paper"
    with pytest.raises(ValueError, match="other is a directory; give a study TOML file or a pre"):
        load_study("other")


def test_run_status_export_and_resume_skip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, TINY, "tiny.toml")
    result = runner.invoke(app, ["run", "tiny.toml"])
    assert result.exit_code == 0, result.output
    assert "8 runs planned, 0 already finished; this run: 8 done" in result.stderr
    store = tmp_path / "schedlab-runs" / "tiny.sqlite"
    with Store(store) as db:
        records = runs_of(db, "tiny")
        assert len(records) == 8 and {r.status for r in records} == {"done"}
        assert {r.attempts for r in records} == {1}
        loss, lr = db.curves(records[0].run_id)
        assert loss.shape == (30,) and lr.shape == (30,) and lr[0] == pytest.approx(3e-4)
        key = sample_key(load_study("tiny.toml").eval)
        samples, seconds = db.samples(records[0].run_id, key)
        assert samples.shape == (200, 2) and seconds > 0
    again = runner.invoke(app, ["run", "tiny.toml"])
    assert "8 runs planned, 8 already finished; this run: nothing" in again.stderr
    status = runner.invoke(app, ["status", "tiny.toml"], terminal_width=150)
    assert status.exit_code == 0 and status.stdout.count("2 done") == 4
    csv_out = tmp_path / "runs.csv"
    assert runner.invoke(app, ["export", "tiny.toml", "--out", str(csv_out)]).exit_code == 0
    import csv

    rows = list(csv.DictReader(csv_out.open()))
    assert len(rows) == 8
    for key in (
        "dataset",
        "schedule",
        "seed",
        "status",
        *DETERMINISTIC,
        "training_time",
        "inference_time",
        "train.steps",
        "data.n",
    ):
        assert key in rows[0]
    assert {r["schedule"] for r in rows} == {"cosine", "step-fast"}
    by_id = {r.run_id: r for r in records}
    for row in rows:
        assert float(row["eval_loss"]) == by_id[row["run_id"]].metrics["eval_loss"]
    parquet = tmp_path / "runs.parquet"
    assert (
        runner.invoke(
            app, ["export", "tiny.toml", "--format", "parquet", "--out", str(parquet)]
        ).exit_code
        == 0
    )
    import pyarrow.parquet as pq

    table = pq.read_table(parquet).to_pylist()
    assert [r["kl_divergence"] for r in table] == [float(r["kl_divergence"]) for r in rows]


def test_paired_seeds_share_weights_data_and_noise(tmp_path):
    study = parse_study(TINY, "tiny")
    with Store(tmp_path / "s.sqlite") as db:
        run_study(study, db)
        first_loss = {}
        for record in runs_of(db, "tiny"):
            loss, _ = db.curves(record.run_id)
            first_loss.setdefault((record.dataset, record.seed), set()).add(float(loss[0]))
    # Step 0 uses the same weights, batch, timesteps and noise under both schedules.
    assert all(len(v) == 1 for v in first_loss.values())
    assert len({next(iter(v)) for v in first_loss.values()}) == 4


def test_diverging_schedule_is_recorded_and_the_others_finish(tmp_path):
    text = TINY + '[[schedules]]\nname = "constant"\nlabel = "hot"\nlr = 1000.0\n'
    with Store(tmp_path / "s.sqlite") as db:
        summary = run_study(parse_study(text, "hot"), db)
        assert summary.outcomes == {"done": 8, "diverged": 4}
        hot = [r for r in runs_of(db, "tiny") if r.label == "hot"]
        assert {r.status for r in hot} == {"diverged"}
        assert all(r.diverged_at is not None and "at step" in r.error for r in hot)
        assert all(np.isnan(r.metrics["kl_divergence"]) for r in hot)


@pytest.mark.parametrize("engine", ["loop", "fleet"])
def test_a_failing_run_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch, engine):
    real = work.evaluate

    def flaky(workload, trained, seed, settings, *args, **kwargs):
        if workload.dataset == "line" and seed == 1:
            raise RuntimeError("simulated out of memory")
        return real(workload, trained, seed, settings, *args, **kwargs)

    monkeypatch.setattr(work, "evaluate", flaky)
    with Store(tmp_path / "s.sqlite") as db:
        summary = run_study(parse_study(TINY, "tiny"), db, engine=engine)
        assert summary.outcomes == {"done": 6, "failed": 2}
        failed = [r for r in runs_of(db, "tiny") if r.status == "failed"]
        assert {r.error for r in failed} == {"RuntimeError: simulated out of memory"}
        assert {(r.dataset, r.seed) for r in failed} == {("line", 1)}
    monkeypatch.undo()
    with Store(tmp_path / "s.sqlite") as db:
        assert run_study(parse_study(TINY, "tiny"), db, engine=engine).outcomes == {"done": 2}
        assert {r.status for r in runs_of(db, "tiny")} == {"done"}


def test_a_failing_fleet_fails_its_members_only(tmp_path, monkeypatch):
    real = work.engines.train

    def broken(members, settings, *args, **kwargs):
        if any(m.seed == 1 and m.points[:, 1].max() > 3.5 for m in members):  # line, seed 1
            raise RuntimeError("simulated fleet crash")
        return real(members, settings, *args, **kwargs)

    monkeypatch.setattr(work.engines, "train", broken)
    with Store(tmp_path / "s.sqlite") as db:
        summary = run_study(parse_study(TINY, "tiny"), db, fleet_size=2)
        assert summary.outcomes == {"done": 4, "failed": 4}


def test_fleet_and_loop_engines_give_the_same_runs(tmp_path):
    study = parse_study(TINY.replace("[train]", '[train]\ndtype = "float64"'), "tiny")
    metrics = {}
    for engine in ("loop", "fleet"):
        with Store(tmp_path / f"{engine}.sqlite") as db:
            run_study(study, db, engine=engine, fleet_size=3)
            metrics[engine] = {
                (r.dataset, r.label, r.seed): (r.engine, r.metrics) for r in runs_of(db, "tiny")
            }
    assert metrics["loop"].keys() == metrics["fleet"].keys()
    for cell, (engine, loop) in metrics["loop"].items():
        fleet_engine, fleet = metrics["fleet"][cell]
        assert (engine, fleet_engine) == ("loop", "fleet")  # each run records its engine
        for key in DETERMINISTIC:
            assert fleet[key] == pytest.approx(loop[key], rel=1e-6), key


def test_ctrl_c_puts_the_run_in_flight_back(tmp_path):
    def interrupt(step, loss, lr):
        raise KeyboardInterrupt

    study = parse_study(TINY.replace("steps = 30", "steps = 60"), "tiny")
    with Store(tmp_path / "s.sqlite") as db:
        with pytest.raises(KeyboardInterrupt):
            run_study(study, db, progress=interrupt)
        records = runs_of(db, "tiny")
        assert {r.status for r in records} == {"pending"}
        assert records[0].error == "interrupted"
        assert run_study(study, db).outcomes == {"done": 8}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "kill_after"),
    [(["--engine", "loop"], 3), (["--engine", "fleet", "--fleet-size", "2"], 2)],
    ids=["loop", "fleet"],
)
def test_kill_9_mid_study_then_resume_equals_an_uninterrupted_run(tmp_path, options, kill_after):
    text = TINY.replace("steps = 30", "steps = 400")
    path = write(tmp_path, text, "tiny.toml")
    store = tmp_path / "killed.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "schedlab", "run", str(path), "--store", str(store), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if store.exists():
            try:
                with sqlite3.connect(store) as c:
                    counts = dict(c.execute("SELECT status, count(*) FROM runs GROUP BY status"))
            except sqlite3.OperationalError:
                continue
            # Killed while a run is in flight, never in the instant between two runs.
            if counts.get("done", 0) >= kill_after and counts.get("running", 0):
                break
    assert proc.poll() is None, "the study finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Store(store) as db:
        before = {r.run_id: r.status for r in runs_of(db, "tiny")}
    assert kill_after <= sum(s == "done" for s in before.values()) < 8
    # The killed driver's run shows as stale: its owner, on this host, is gone.
    assert "stale" in before.values()
    result = runner.invoke(app, ["run", str(path), "--store", str(store), *options])
    assert result.exit_code == 0, result.output
    with Store(store) as db, Store(tmp_path / "clean.sqlite") as clean:
        # Uninterrupted, the fleet engine trains all 8 runs as one fleet: positions differ
        # from the killed study's fleets of 2, the numbers may not.
        run_study(parse_study(text, "tiny"), clean, engine=options[1])
        resumed = {r.run_id: r for r in runs_of(db, "tiny")}
        reference = {r.run_id: r for r in runs_of(clean, "tiny")}
        assert resumed.keys() == reference.keys()
        for run_id, record in resumed.items():
            assert record.status == "done"
            # Runs done before the kill were not redone; those in flight ran a second time.
            assert record.attempts == (
                1 if before[run_id] == "done" else 2 if before[run_id] == "stale" else 1
            )
            for key in DETERMINISTIC:
                assert record.metrics[key] == reference[run_id].metrics[key], key
            for got, want in zip(db.weights(run_id), clean.weights(run_id), strict=True):
                assert np.array_equal(got, want)  # raw and EMA weights, bit for bit


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


BAD_STUDIES = [
    ("", "missing key 'name'"),
    ("name = 'x'\n", "missing key 'datasets'"),
    ("name = 'x'\ndatasets = ['moons']\n", "missing key 'schedules'"),
    (
        "name = 'x'\ndatasets = ['spiral']\n[[schedules]]\nname='cosine'\n",
        "datasets: unknown dataset 'spiral'; valid datasets: circle, digits, dino, line, mixture, "
        "moons",
    ),
    ("name = 'x'\ndatasets = []\n[[schedules]]\nname='cosine'\n", "datasets: List should have"),
    (
        "name = 'x'\ndatasets = ['moons']\n[[schedules]]\nname='warp'\n",
        "unknown schedule 'warp'; valid schedules:",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\ncolour = 'red'\n[[schedules]]\nname='cosine'\n",
        "unknown key 'colour'",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\n[train]\nstep = 5\n[[schedules]]\nname='cosine'\n",
        "unknown key 'train.step'",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\n[train]\nlr = -0.1\n[[schedules]]\nname='cosine'\n",
        "train.lr: Input should be greater than 0",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\n[train]\nsteps = 0\n[[schedules]]\nname='cosine'\n",
        "train.steps: Input should be greater than 0",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\nseeds = 0\n[[schedules]]\nname='cosine'\n",
        "seeds must be a count in [1, 10000]",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\nseeds = [1, 1]\n[[schedules]]\nname='cosine'\n",
        "seeds must be distinct ints in [0, 2**63 - 1]",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\n[[schedules]]\nname='step'\nparams={gamma=0}\n",
        "schedule 'step': gamma must be a float in (0, 1], got 0",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\n[[schedules]]\nname='step'\nparams={size=3}\n",
        "schedule 'step': unknown parameter 'size'",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\n[[schedules]]\nname='cosine'\n[[schedules]]\n"
        "name='cosine'\n",
        "schedule label 'cosine' is used twice",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\n[[schedules]]\nname='cosine'\nlabel='a'\nwarmup=3\n",
        "unknown key 'schedules.0.warmup'",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\n[train]\nsteps=10\n[[schedules]]\nname='cosine'\n"
        "params={warmup_steps=10}\n",
        "warmup_steps must be an int in [0, 9]",
    ),
    ("name = 'x y'\ndatasets = ['moons']\n[[schedules]]\nname='cosine'\n", "name: String should"),
    ("name = 'x'\ndatasets = 'moons'\n[[schedules]]\nname='cosine'\n", "datasets: Input should"),
    ("name = 'x\ndatasets = ['moons']\n", "not valid TOML"),
    (
        "name = 'x'\ndatasets = ['moons']\n[train]\ndtype='float16'\n[[schedules]]\n"
        "name='cosine'\n",
        "train.dtype: Input should be 'float32' or 'float64'",
    ),
    # Absurd sizes are refused before anything is written; true is not 1, 1e4 is not an int.
    (
        "name = 'x'\ndatasets = ['moons']\n[train]\nsteps=1000000000000\n[[schedules]]\n"
        "name='cosine'\n",
        "train.steps: Input should be less than or equal to 100000000",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\n[data]\nn=1000000000000\n[[schedules]]\nname='cosine'\n",
        "data.n: Input should be less than or equal to 10000000",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\n[train]\nbatch_size=1e9\n[[schedules]]\nname='cosine'\n",
        "train.batch_size: Input should be a valid integer",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\nseeds = 10000000\n[[schedules]]\nname='cosine'\n",
        "seeds must be a count in [1, 10000] or a list of seeds, got 10000000",
    ),
    (
        "name = 'x'\ndatasets = ['moons']\n[train]\nsteps=true\n[[schedules]]\nname='cosine'\n",
        "train.steps: Input should be a valid integer",
    ),
    ("name = '..'\ndatasets = ['moons']\n[[schedules]]\nname='cosine'\n", "name: String should"),
    (
        "name = '" + "a" * 300 + "'\ndatasets = ['moons']\n[[schedules]]\nname='cosine'\n",
        "name: String should",
    ),
]


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("finished") / "store.sqlite"
    with Store(store) as db:
        run_study(parse_study(TINY.replace("steps = 30", "steps = 5"), "tiny"), db)
    return store


@pytest.mark.parametrize(("text", "message"), BAD_STUDIES, ids=[m for _, m in BAD_STUDIES])
def test_malformed_study_is_one_line_exit_2_and_store_untouched(
    tmp_path, finished_store, text, message
):
    path = write(tmp_path, text)
    store = tmp_path / "store.sqlite"
    shutil.copy(finished_store, store)
    before = digest(store)
    for command in (["run"], ["status"], ["export", "--out", str(tmp_path / "x.csv")]):
        result = runner.invoke(app, [*command, str(path), "--store", str(store)])
        assert result.exit_code == 2, (command, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"error: {path}: ") and message in lines[0], lines[0]
    assert digest(store) == before
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nosuch"], "error: unknown study 'nosuch': not a file and not a preset"),
        (["run", "missing.toml"], "error: study file 'missing.toml' does not exist"),
        (["status", "quick", "--store", "{tmp}/none.sqlite"], "error: no store at"),
        (
            ["export", "quick", "--out", "{tmp}/x.csv", "--format", "xlsx"],
            "error: unknown format 'xlsx'; valid formats: csv, parquet, tensorboard, mlflow",
        ),
    ],
)
def test_bad_cli_input(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert not (tmp_path / "none.sqlite").exists()


def test_store_from_a_newer_schedlab_is_refused_untouched(tmp_path):
    store = tmp_path / "s.sqlite"
    Store(store).close()
    c = sqlite3.connect(store)
    c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    c.commit()
    c.close()
    before = digest(store)
    path = write(tmp_path, TINY)
    result = runner.invoke(app, ["run", str(path), "--store", str(store)])
    assert result.exit_code == 2
    assert f"written by a newer schedlab (store schema {SCHEMA_VERSION + 1}" in result.stderr
    assert digest(store) == before


def test_a_file_that_is_not_a_store_is_refused_untouched(tmp_path):
    store = write(tmp_path, "these are not the bytes of a database" * 100, "s.sqlite")
    before = digest(store)
    result = runner.invoke(app, ["run", str(write(tmp_path, TINY)), "--store", str(store)])
    assert result.exit_code == 2
    assert "is not a schedlab store" in result.stderr
    assert digest(store) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "turbo"], "error: unknown engine 'turbo'; valid engines: fleet, loop"),
        (["--fleet-size", "0"], "error: --fleet-size must be a positive int, got 0"),
        (["--device", "tpu"], "error: unknown device 'tpu'; valid devices: cpu, cuda"),
    ],
)
def test_bad_engine_options(tmp_path, args, message):
    path = write(tmp_path, TINY)
    result = runner.invoke(app, ["run", str(path), "--store", str(tmp_path / "s.sqlite"), *args])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert not (tmp_path / "s.sqlite").exists()


def test_sigterm_mid_study_puts_its_runs_back_and_exits_143(tmp_path):
    path = write(tmp_path, TINY.replace("steps = 30", "steps = 400"), "tiny.toml")
    store = tmp_path / "s.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "schedlab", "run", str(path), "--store", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(store) as c:
                if c.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]:
                    break
        except sqlite3.OperationalError:  # not created yet
            continue
    assert proc.poll() is None, "the study finished before it could be stopped"
    time.sleep(1)  # inside training
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "terminated: finished runs are saved in" in stderr and "Traceback" not in stderr
    with sqlite3.connect(store) as c:
        states = dict(c.execute("SELECT status, count(*) FROM runs GROUP BY status"))
    assert "running" not in states and states.get("pending", 0) > 0
    assert runner.invoke(app, ["run", str(path), "--store", str(store)]).exit_code == 0


def test_outputs_replace_what_was_there_whole_and_refuse_foreign_folders(tmp_path):
    path = write(tmp_path, TINY, "tiny.toml")
    store = str(tmp_path / "s.sqlite")
    assert runner.invoke(app, ["run", str(path), "--store", store]).exit_code == 0
    out = tmp_path / "report"
    for _ in range(2):  # the second report replaces the first
        result = runner.invoke(app, ["report", str(path), "--store", store, "--out", str(out)])
        assert result.exit_code == 0, result.output
    assert (out / "index.html").stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    (foreign / "data.npz").write_bytes(b"keep me too")
    refused = runner.invoke(app, ["report", str(path), "--store", store, "--out", str(foreign)])
    assert refused.exit_code == 2
    assert "holds files that are not a schedlab report" in refused.stderr
    assert (foreign / "data.npz").read_bytes() == b"keep me too"
    exported = runner.invoke(app, ["export", str(path), "--store", store, "--out", str(foreign)])
    assert exported.exit_code == 2 and "is a directory" in exported.stderr
    csv_file = tmp_path / "runs.csv"
    csv_file.write_text("old")
    exported = runner.invoke(app, ["export", str(path), "--store", store, "--out", str(csv_file)])
    assert exported.exit_code == 0 and csv_file.read_text().startswith("dataset,schedule,seed")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_study_file_that_is_not_utf8_is_named_in_one_line(tmp_path):
    path = tmp_path / "utf16.toml"
    path.write_text(TINY, encoding="utf-16")
    result = runner.invoke(app, ["status", str(path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {path}: not UTF-8 text (invalid start byte at byte 0)"
    )


def test_export_to_stdout_is_csv_alone_and_messages_go_to_stderr(tmp_path):
    path = write(tmp_path, TINY, "tiny.toml")
    store = str(tmp_path / "s.sqlite")
    assert runner.invoke(app, ["run", str(path), "--store", store]).exit_code == 0
    result = runner.invoke(app, ["export", str(path), "--store", store, "--out", "-"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 8 and {r["status"] for r in rows} == {"done"}
    written = runner.invoke(
        app, ["export", str(path), "--store", store, "--out", str(tmp_path / "r.csv")]
    )
    assert written.stdout == "" and written.stderr.startswith("wrote 8 rows to ")
    parquet = runner.invoke(
        app, ["export", str(path), "--store", store, "--out", "-", "--format", "parquet"]
    )
    assert parquet.exit_code == 2 and "--out - writes CSV to stdout" in parquet.stderr


def test_version_and_unwritable_outputs_are_one_line(tmp_path):
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("schedlab 0.")
    path = write(tmp_path, TINY, "tiny.toml")
    store = str(tmp_path / "s.sqlite")
    assert runner.invoke(app, ["run", str(path), "--store", store]).exit_code == 0
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    result = runner.invoke(
        app, ["export", str(path), "--store", store, "--out", str(blocked / "runs.csv")]
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {blocked}: ")
