"""Equal-budget tuning: a tuned study end to end, its determinism across kills, its errors."""

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from schedlab.cli import app
from schedlab.config.entries import ScheduleEntry
from schedlab.config.space import Dim, carried
from schedlab.config.study import parse_study
from schedlab.execute.local import run_study as run_locally
from schedlab.report.data import study_records
from schedlab.store.store import Store
from schedlab.trials import planned_runs, search_result, searches
from schedlab.tuning.samplers import SobolSampler
from schedlab.tuning.search import Tuner, optuna_path, tune_study


def run_study(study, db, *args, **kwargs):
    """A study run here, tuned by the tuner (as `schedlab run` does)."""
    return run_locally(study, db, *args, tune=tune_study, **kwargs)


runner = CliRunner()
STUDY = (Path(__file__).parent / "fixtures" / "tiny_tuned.toml").read_text()


def optuna_trials(store: Path) -> dict[str, list[tuple[int, str, dict, float | None]]]:
    """Every Optuna trial of every search in a store's Optuna file, by search key."""
    storage = f"sqlite:///{optuna_path(store)}"
    out = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        out[summary.study_name] = [
            (t.number, t.state.name, t.params, t.value) for t in study.get_trials()
        ]
    return out


def test_a_tuned_study_tunes_then_trains_the_best_on_the_final_seeds_only(tmp_path):
    study = parse_study(STUDY, "tuned")
    path = tmp_path / "tuned.sqlite"
    with Store(path) as db:
        outcome = run_study(study, db)
        # 2 searches x 2 datasets x 4 trials, then 3 schedules x 2 datasets x 2 seeds
        assert outcome.outcomes == {"done": 16 + 12}
        results = [search_result(db, s) for s in searches(study, "fleet")]
        finals = study_records(db, "tuned")[1]
    trials = optuna_trials(path)
    assert len(results) == 4
    for result in results:
        assert [t.number for t in result.trials] == [0, 1, 2, 3]
        assert all(t.state == "done" for t in result.trials)
        best = result.best
        scores = [t.value for t in result.trials]
        assert best is not None and best.value == min(scores)
        # Optuna's best trial is schedlab's chosen one.
        optuna_best = optuna.load_study(
            study_name=result.search.key, storage=f"sqlite:///{optuna_path(path)}"
        ).best_trial
        assert optuna_best.number == best.number and optuna_best.params == best.values
        assert [v for *_, v in trials[result.search.key]] == scores
        # The final runs of this schedule x dataset train the chosen configuration.
        chosen = [
            r
            for r in finals
            if r.label == result.search.label and r.dataset == result.search.dataset
        ]
        assert sorted(r.seed for r in chosen) == [0, 1]
        for record in chosen:
            assert record.settings["train"]["lr"] == best.values["lr"]
            assert all(record.params[k] == v for k, v in best.values.items() if k != "lr")
            assert record.settings["train"]["steps"] == 40
    # Tuning trains on tuning seeds only; the ranked runs use the final seeds only.
    with sqlite3.connect(path) as c:
        tune_seeds = {
            s for (s,) in c.execute("SELECT runs.seed FROM runs JOIN trials USING (run_id)")
        }
    assert tune_seeds == {100}
    assert {r.seed for r in finals} == {0, 1} and len(finals) == 12
    as_given = [r for r in finals if r.label == "step (as given)"]
    assert {r.params["step_size"] for r in as_given} == {10}
    assert {r.settings["train"]["lr"] for r in as_given} == {3e-4}


def test_export_has_phase_and_trial_and_the_report_a_tuning_section(tmp_path):
    study_file = tmp_path / "tuned.toml"
    study_file.write_text(STUDY.replace("trials = 4", "trials = 2"))
    store = tmp_path / "s.sqlite"
    assert runner.invoke(app, ["run", str(study_file), "--store", str(store)]).exit_code == 0
    result = runner.invoke(app, ["export", str(study_file), "--store", str(store), "--out", "-"])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    shown = runner.invoke(app, ["status", str(study_file), "--store", str(store), "--json"])
    status = json.loads(shown.stdout)
    assert status["counts"] == {"done": 12} and len(status["runs"]) == 12
    assert status["tuning"].startswith("tuning: 8 of 8 trials scored; 4 of 4 schedule x dataset")
    tune = [r for r in rows if r["phase"] == "tune"]
    final = [r for r in rows if r["phase"] == "final"]
    assert len(tune) == 2 * 2 * 2 and len(final) == 12
    assert {r["seed"] for r in tune} == {"100"} and {r["trial"] for r in tune} == {"0", "1"}
    with Store(store, read_only=True) as db:
        best = {
            (s.dataset, s.label): search_result(db, s).best
            for s in searches(parse_study(study_file.read_text(), "t"), "fleet")
        }
    for row in final:
        chosen = best.get((row["dataset"], row["schedule"]))
        if chosen is None:
            assert row["trial"] == ""  # the schedule trained as given
        else:
            assert int(row["trial"]) == chosen.number
            assert float(row["train.lr"]) == chosen.values["lr"]
    out = tmp_path / "report"
    report = runner.invoke(
        app, ["report", str(study_file), "--store", str(store), "--out", str(out)]
    )
    assert report.exit_code == 0, report.output
    page = (out / "index.html").read_text()
    assert '<h2 id="tuning">Tuning</h2>' in page and "Tuned vs as published" in page
    assert "step - step (as given)" in page
    assert (out / "sensitivity.png").stat().st_size > 5_000


def rounds(store: Path, study_text: str) -> list[tuple[str, int, float, dict]]:
    """The round a fresh Tuner asks on ``store``: (search key, trial, LR, schedule params)."""
    study = parse_study(study_text, "t")
    tuner = Tuner(study, "fleet", store)
    return [
        (search.key, number, runs[0].settings.train.lr, runs[0].schedule.params)
        for search, number, runs in tuner.next_round()
    ]


def test_a_kill_inside_an_ask_resumes_with_the_same_trials(tmp_path, monkeypatch):
    uninterrupted = rounds(tmp_path / "a.sqlite", STUDY)
    asked = 0
    original = optuna.Study.ask

    def dies_on_the_third_ask(self, *args, **kwargs):
        nonlocal asked
        asked += 1
        if asked == 3:
            raise KeyboardInterrupt  # killed between two asks of one round
        return original(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "ask", dies_on_the_third_ask)
    with pytest.raises(KeyboardInterrupt):
        rounds(tmp_path / "b.sqlite", STUDY)
    monkeypatch.setattr(optuna.Study, "ask", original)
    # Two trials were asked and left running; the round finishes with the same four.
    assert rounds(tmp_path / "b.sqlite", STUDY) == uninterrupted
    assert len(uninterrupted) == 4 * 2  # 4 searches, a batch of 2 each


def run_command(study_file: Path, store: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "schedlab",
        "run",
        str(study_file),
        "--fleet-size",
        "3",
        "--store",
        str(store),
    ]


ENV = {**os.environ, "COLUMNS": "150"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(study file, store) of the tiny tuned study run once by the CLI, start to end."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    study_file, store = folder / "tuned.toml", folder / "full.sqlite"
    # Trials long enough (about a second a fleet) for a kill to land reliably mid-tuning.
    study_file.write_text(STUDY.replace("steps = 40", "steps = 300"))
    subprocess.run(run_command(study_file, store), env=ENV, check=True, capture_output=True)
    return study_file, store


def final_metrics(store: Path) -> dict[str, dict[str, float]]:
    """run id -> every metric of the final runs, times left out."""
    with Store(store, read_only=True) as db:
        records = study_records(db, "tuned")[1]
    return {
        r.run_id: {k: v for k, v in r.metrics.items() if not k.endswith("_time")} for r in records
    }


@pytest.mark.slow
def test_kill_9_mid_tuning_then_resume_gives_the_same_trials_and_choices(tmp_path, uninterrupted):
    study_file, full = uninterrupted
    killed = tmp_path / "killed.sqlite"
    proc = subprocess.Popen(
        run_command(study_file, killed),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if killed.exists() and done_trials(killed) >= 5:  # inside the second round
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 5 <= done_trials(killed) < 16, "the kill must land mid-tuning"
    resumed = subprocess.run(
        run_command(study_file, killed), env=ENV, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert optuna_trials(killed) == optuna_trials(full)
    assert_same_finals(killed, full)


@pytest.mark.slow
def test_two_processes_share_a_tuned_study_and_train_every_run_once(tmp_path, uninterrupted):
    study_file, full = uninterrupted
    shared = tmp_path / "shared.sqlite"
    procs = [
        subprocess.Popen(
            run_command(study_file, shared), env=ENV, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    with sqlite3.connect(shared) as c:
        attempts = [a for (a,) in c.execute("SELECT attempts FROM runs")]
    assert len(attempts) == 16 + 12 and set(attempts) == {1}  # every run trained once
    # The same trials, asked once each, and the same choices as one process alone.
    assert optuna_trials(shared) == optuna_trials(full)
    assert_same_finals(shared, full)


def assert_same_finals(store: Path, reference: Path) -> None:
    """The same final runs, every metric bitwise equal (NaN where the reference has NaN)."""
    ours, theirs = final_metrics(store), final_metrics(reference)
    assert ours.keys() == theirs.keys() and len(ours) == 12
    for run_id, metrics in ours.items():
        assert metrics == pytest.approx(theirs[run_id], nan_ok=True, rel=0, abs=0)


def done_trials(store: Path) -> int:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as c:
        try:
            return c.execute(
                "SELECT count(*) FROM trials JOIN runs USING (run_id) WHERE status = 'done'"
            ).fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0


def test_the_sobol_sampler_gives_trial_n_the_same_point_whatever_came_before():
    dims = [Dim("lr", 1e-5, 1e-2, True, False), Dim("step_size", 10, 500, True, True)]

    class Trial:
        def __init__(self, number):
            self.number = number

    lr = optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)
    size = optuna.distributions.IntDistribution(10, 500, log=True)
    forward = [
        (
            SobolSampler(dims, 7).sample_independent(None, Trial(n), "lr", lr),
            SobolSampler(dims, 7).sample_independent(None, Trial(n), "step_size", size),
        )
        for n in range(9)
    ]
    assert SobolSampler(dims, 7).sample_independent(None, Trial(5), "lr", lr) == forward[5][0]
    assert len(set(forward)) == 9
    assert all(1e-5 <= a <= 1e-2 and 10 <= b <= 500 and isinstance(b, int) for a, b in forward)
    # Every value is a point of one scrambled Sobol sequence, mapped to the dims by hand.
    from scipy.stats import qmc

    u = qmc.Sobol(2, scramble=True, seed=7).random_base2(4)
    assert forward[3][0] == pytest.approx(10 ** (-5 + 3 * u[3, 0]), rel=1e-12)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("tune = { nope = { low = 1.0, high = 2.0 } }", "cannot tune 'nope'"),
        (
            "tune = { step_size = { low = 1.5, high = 20.0 } }",
            "step_size's search range must be an int in [1, inf), got 1.5",
        ),
        ("tune = { gamma = { low = 0.5, high = 2.0 } }", "gamma's search range must be"),
        ("tune = { gamma = { low = 0.0, high = 0.5, log = true } }", "needs low > 0"),
        ("tune = { gamma = { low = 0.5, high = 0.1 } }", "needs low < high"),
    ],
)
def test_bad_tune_entries_are_one_line_errors(patch, message):
    text = STUDY.replace('name = "step"\n[[', f'name = "step"\n{patch}\n[[', 1)
    with pytest.raises(ValueError, match=r"^tuned: ") as err:
        parse_study(text, "tuned")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_study_level_tune_errors():
    no_tune = STUDY[: STUDY.index("[tune]")] + STUDY[STUDY.index("[[schedules]]") :]
    ranged = no_tune.replace('name = "step"\n[[', 'name = "step"\ntune = { gamma = false }\n[[', 1)
    cases = [
        (ranged, "sets tune ranges but there is no [tune]"),
        (STUDY.replace("batch = 2", 'objective = "nope"'), "unknown objective 'nope'; valid"),
        (STUDY.replace("batch = 2", "reference_eval_loss = 1"), "unknown key"),
        (
            STUDY.replace("batch = 2", "space = { nope = { low = 1.0, high = 2.0 } }"),
            "[tune.space] names nope",
        ),
        (STUDY.replace("batch = 2", 'sampler = "grid"'), "tune.sampler"),
        (
            STUDY.replace('name = "cosine"', 'name = "cosine"\ntune = "yes"'),
            "schedules.0.tune: tune must be true, false or a table of search ranges, got 'yes'",
        ),
        (
            STUDY.replace('name = "cosine"', 'name = "cosine"\ntune = false').replace(
                'name = "step"\n[[', 'name = "step"\ntune = false\n[['
            ),
            "[tune] has nothing to tune: every schedule says tune = false",
        ),
        (
            STUDY.replace("batch = 2", 'objective = "eval_loss"'),
            "objective 'eval_loss' is disabled by [eval]",
        ),
        (
            STUDY.replace("tune_seeds = [100]", "tune_seeds = [1]"),
            "tune_seeds [1] are also final seeds",
        ),
    ]
    for text, message in cases:
        with pytest.raises(ValueError) as err:
            parse_study(text, "tuned")
        assert message in str(err.value), (message, str(err.value))


def test_budgets_scale_with_the_space_and_the_best_are_confirmed_at_the_final_length(tmp_path):
    text = STUDY.replace(
        "trials = 4\n", "trials = 4\ntrials_per_parameter = 2\nconfirm = 2\nsteps = 20\n"
    )
    study = parse_study(text, "tuned")
    path = tmp_path / "tuned.sqlite"
    with Store(path) as db:
        run_study(study, db)
        found = searches(study, "fleet")
        results = {(s.label, s.dataset): search_result(db, s) for s in found}
        for search in found:
            result = results[(search.label, search.dataset)]
            assert len(result.trials) == 2 * len(search.dims)  # cosine: lr; step: 3 dims
            # The best 2 trials, trained again at the study's 40 steps on the tuning seed.
            confirmed = db.trial_runs(search.confirm_key)
            ranked = sorted(
                (t for t in result.trials if t.state == "done"), key=lambda t: (t.value, t.number)
            )
            assert sorted({trial for trial, _, _ in confirmed}) == sorted(
                t.number for t in ranked[:2]
            )
            steps = {
                json.loads(
                    db.conn.execute(
                        "SELECT settings FROM runs WHERE run_id = ?", (run_id,)
                    ).fetchone()[0]
                )["train"]["steps"]
                for *_, run_id in confirmed
            }
            assert steps == {40}
            # Trained at twice the tuning length, a StepLR's step size doubles (the same
            # fraction of the run); the LR and gamma are kept.
            trial_params = {t.number: t.params for t in result.trials}
            for trial, _, run_id in confirmed:
                params = json.loads(
                    db.conn.execute(
                        "SELECT params FROM runs WHERE run_id = ?", (run_id,)
                    ).fetchone()[0]
                )
                tuned = trial_params[trial]
                if search.label == "step":
                    assert params["step_size"] == max(1, round(2 * tuned["step_size"]))
                    assert params["gamma"] == tuned["gamma"]
                else:
                    assert params == tuned
            # Chosen: the lower score at the final length, read back from the store.
            at_final = {}
            for trial, _, run_id in confirmed:
                (value,) = db.conn.execute(
                    "SELECT value FROM measurements WHERE run_id = ? AND metric = ?",
                    (run_id, "eval_loss_heldout_ema"),
                ).fetchone()
                at_final[trial] = value
            assert result.chosen.number == min(at_final, key=lambda n: (at_final[n], n))
    report = tmp_path / "report"
    study_file = tmp_path / "tuned.toml"
    study_file.write_text(text)
    args = ["report", str(study_file), "--store", str(path), "--out", str(report)]
    assert runner.invoke(app, args).exit_code == 0
    page = (report / "index.html").read_text()
    assert "Confirmed at the final length" in page
    assert "2 configurations per tuned parameter" in page
    exported = runner.invoke(app, ["export", str(study_file), "--store", str(path), "--out", "-"])
    phases = [row["phase"] for row in csv.DictReader(io.StringIO(exported.stdout))]
    # 2 datasets x (cosine 2 + step 6 trials, 2 confirmed each), one tuning seed; 12 finals
    assert phases.count("confirm") == 2 * 2 * 2 and phases.count("tune") == 2 * 8
    assert phases.count("final") == 12
    with Store(path, create=False, read_only=True) as db:
        finals = planned_runs(study, "fleet", db)
    for run in finals:
        if run.label == "step":
            chosen = results[run.label, run.dataset].chosen.params
            assert run.schedule.params["step_size"] == max(1, round(2 * chosen["step_size"]))
            assert run.settings.train.steps == 40


def test_a_configuration_tuned_short_keeps_its_shape_at_the_final_length():
    step, exponential, plateau, cosine = (
        ScheduleEntry(name="step"),
        ScheduleEntry(name="exponential"),
        ScheduleEntry(name="plateau"),
        ScheduleEntry(name="cosine"),
    )
    # StepLR: 4 drops in 1,000 steps stay 4 drops in 10,000.
    got = carried(
        step,
        {"lr": 1e-3, "step_size": 250, "gamma": 0.5},
        ["lr", "step_size", "gamma"],
        1000,
        10000,
    )
    assert got == {"lr": 1e-3, "step_size": 2500, "gamma": 0.5}
    # ExponentialLR: the LR factor left after the last step is kept.
    gamma = carried(exponential, {"gamma": 0.995}, ["gamma"], 1000, 10000)["gamma"]
    assert gamma**10000 == pytest.approx(0.995**1000, rel=1e-9)
    # Plateau's patience scales; its factor does not; a held (untuned) step size stays.
    assert carried(
        plateau, {"patience": 37, "factor": 0.3}, ["patience", "factor"], 1000, 3000
    ) == {
        "patience": 111,
        "factor": 0.3,
    }
    assert carried(step, {"step_size": 30, "gamma": 0.1}, ["gamma"], 1000, 10000) == {
        "step_size": 30,
        "gamma": 0.1,
    }
    assert carried(cosine, {"lr": 2e-3}, ["lr"], 1000, 10000) == {"lr": 2e-3}
