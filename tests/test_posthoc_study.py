"""Post-hoc EMA through the command line: a study that tracks EMAs, `measure --ema-sweep`,
`export --what ema-sweep` and the report's section, read back and checked independently."""

import csv
import math
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from schedlab.cli import app
from schedlab.config.study import parse_study
from schedlab.execute.work import Worker
from schedlab.plan import expand
from schedlab.store.store import Store

runner = CliRunner()
STUDY = """name = "posthoc"
datasets = ["moons", "line"]
seeds = 2
[data]
n = 600
[train]
steps = 80
batch_size = 64
emb_size = 8
hidden_size = 16
hidden_layers = 1
[eval]
samples = 100
heldout = 200
[ema]
posthoc = true
snapshots = 4
[[schedules]]
name = "cosine"
label = "baseline"
[[schedules]]
name = "constant"
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A study trained with post-hoc EMA and swept at 0.05 (tracked) and 0.2 (formed)."""
    folder = tmp_path_factory.mktemp("posthoc")
    study, store = folder / "posthoc.toml", folder / "posthoc.sqlite"
    study.write_text(STUDY)
    ran = runner.invoke(app, ["run", str(study), "--store", str(store)])
    assert ran.exit_code == 0, ran.output
    assert "post-hoc EMA: 8 snapshots a run (2 EMAs x 4) add " in ran.stderr
    args = ["measure", str(study), "--store", str(store), "--ema-sweep", "0.2,0.05"]
    measured = runner.invoke(app, [*args, "--ema-metrics", "eval_loss_heldout_ema,kl_divergence"])
    assert measured.exit_code == 0, measured.output
    assert "post-hoc EMAs of 8 runs measured (32 values)" in measured.stderr
    return study, store


def exported(study, store, out):
    args = ["export", str(study), "--store", str(store), "--what", "ema-sweep", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(out.open()))


def test_every_run_stores_its_snapshots(swept):
    _, store = swept
    with sqlite3.connect(store) as c:
        counts = c.execute("SELECT count(*) FROM snapshots GROUP BY run_id").fetchall()
        steps = sorted({s for (s,) in c.execute("SELECT step FROM snapshots")})
    assert counts == [(8,)] * 8 and steps == [20, 40, 60, 80]


def test_the_sweep_at_a_tracked_length_is_the_tracked_emas_held_out_loss(swept, tmp_path):
    study, store = swept
    rows = exported(study, store, tmp_path / "sweep.csv")
    assert list(rows[0])[:5] == ["run_id", "dataset", "schedule", "seed", "ema_std"]
    assert len(rows) == 16 and {r["ema_std"] for r in rows} == {"0.05", "0.2"}
    assert all(float(r["kl_divergence"]) > 0 and r["mmd"] == "" for r in rows)
    spec = parse_study(study.read_text(), "posthoc.toml")
    worker = Worker()
    with Store(store, create=False, read_only=True) as db:
        for run in expand(spec):
            (tracked,) = [
                s.weights
                for s in db.snapshots(run.run_id)
                if (s.std, s.step) == (0.05, spec.train.steps)
            ]
            want = worker.workload(run).heldout(worker.model(run, tracked))
            (row,) = [r for r in rows if r["run_id"] == run.run_id and r["ema_std"] == "0.05"]
            assert float(row["eval_loss_heldout_ema"]) == pytest.approx(want, rel=1e-6)
            assert (row["dataset"], row["schedule"], int(row["seed"])) == (
                run.dataset,
                run.label,
                run.seed,
            )


def test_a_second_sweep_measures_only_what_is_missing(swept, tmp_path):
    study, store = swept
    before = (tmp_path / "a.csv", tmp_path / "b.csv")
    first = exported(study, store, before[0])
    args = ["measure", str(study), "--store", str(store), "--ema-sweep", "0.05,0.2"]
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "post-hoc EMAs of 0 runs measured (0 values)" in again.stderr
    assert exported(study, store, before[1]) == first


def test_the_report_answers_the_constant_lr_question(swept, tmp_path):
    study, store = swept
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(study), "--store", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    assert "Post-hoc EMA: the averaging length" in page
    assert "With its best averaging, does a constant LR match the decayed schedules?" in page
    best = list(csv.DictReader((out / "ema_best.csv").open()))
    assert {(r["metric"], r["schedule"]) for r in best} == {
        (m, s) for m in ("eval_loss_heldout_ema", "kl_divergence") for s in ("baseline", "constant")
    }
    rows = exported(study, store, tmp_path / "sweep.csv")
    usable = [std for std in ("0.05", "0.2") if built_error(float(std)) <= 0.1]
    assert "0.05" in usable  # a tracked length is built exactly
    for r in best:
        cell = {
            (int(x["seed"]), x["ema_std"]): float(x[r["metric"]])
            for x in rows
            if (x["schedule"], x["dataset"]) == (r["schedule"], r["dataset"])
        }

        def chosen(seeds, cell=cell):
            return min(usable, key=lambda std: np.mean([cell[(s, std)] for s in seeds]))

        # The length shown: the lowest mean over both seeds; each seed's value: at the length
        # the other seed chose (cross-fitted, folds {0} and {1}).
        assert float(r["best_ema_std"]) == float(chosen([0, 1]))
        crossed = [cell[(0, chosen([1]))], cell[(1, chosen([0]))]]
        assert math.isclose(float(r["mean"]), np.mean(crossed), rel_tol=1e-12)
        assert r["cross_fitted"] == "True"
    assert "profile error" in page and "may be chosen" in page


def built_error(std):
    """The relative L2 error of the study's snapshots (0.05 and 0.1, 4 each over 80 steps)
    building ``std``, by numerical integration of the profiles on a fine grid."""
    from schedlab.averaging.profiles import coefficients, gamma_of, snapshot_steps

    taken = snapshot_steps(80, 4)
    steps = np.array(taken * 2, dtype=float)
    gammas = np.array([gamma_of(0.05)] * 4 + [gamma_of(0.10)] * 4)
    c = coefficients(steps, gammas, 80, gamma_of(std))
    tau = np.linspace(0, 80, 400_001)[1:]

    def profile(t, g):
        return np.where(tau <= t, (g + 1) * tau**g / t ** (g + 1), 0.0)

    built = sum(ci * profile(t, g) for ci, t, g in zip(c, steps, gammas, strict=True))
    target = profile(80.0, gamma_of(std))
    return math.sqrt(np.sum((built - target) ** 2) / np.sum(target**2))


def test_a_dry_run_sweep_writes_nothing(swept):
    study, store = swept
    before = store.read_bytes()
    args = ["measure", str(study), "--store", str(store), "--ema-sweep", "0.1", "--dry-run"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("1 post-hoc EMA values") == 8
    assert store.read_bytes() == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ema-sweep", "0.5"], "error: an EMA's relative std must be in (0, 0.3003]"),
        (["--ema-sweep", "a,b"], "error: --ema-sweep takes comma-separated relative stds"),
        (["--ema-sweep", "nan"], "error: --ema-sweep takes finite relative stds, got nan"),
        (
            ["--ema-sweep", "0.1", "--ema-metrics", "training_time"],
            "error: --ema-metrics: 'training_time' is not a metric of the EMA weights; valid: ",
        ),
    ],
)
def test_a_bad_sweep_is_one_line(swept, extra, message):
    study, store = swept
    result = runner.invoke(app, ["measure", str(study), "--store", str(store), *extra])
    assert result.exit_code != 0
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_a_report_of_snapshots_not_swept_says_how_to_sweep(swept, tmp_path):
    study, store = swept
    unswept = tmp_path / "unswept.sqlite"
    with sqlite3.connect(store) as source, sqlite3.connect(unswept) as copy:
        source.backup(copy)
        copy.execute("DELETE FROM ema_sweep")
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(study), "--store", str(unswept), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    assert "no EMA length was measured yet: <code>schedlab measure STUDY --ema-sweep" in page
    assert not (out / "ema_best.csv").exists()


def test_a_study_without_snapshots_says_how_to_get_them(tmp_path):
    study, store = tmp_path / "plain.toml", tmp_path / "plain.sqlite"
    study.write_text(
        STUDY.replace("posthoc = true", "posthoc = false").replace("seeds = 2", "seeds = 1")
    )
    assert runner.invoke(app, ["run", str(study), "--store", str(store)]).exit_code == 0
    result = runner.invoke(
        app, ["measure", str(study), "--store", str(store), "--ema-sweep", "0.1"]
    )
    assert result.exit_code == 2
    report = runner.invoke(
        app, ["report", str(study), "--store", str(store), "--out", str(tmp_path / "r")]
    )
    assert (
        report.exit_code == 0 and "Post-hoc EMA" not in (tmp_path / "r" / "index.html").read_text()
    )
    assert result.stderr == (
        "error: --ema-sweep measures post-hoc EMAs, and study 'posthoc' keeps no snapshots: "
        "set [ema] posthoc = true in it and run it (its runs train again, with them)\n"
    )
    export = [
        "export",
        str(study),
        "--store",
        str(store),
        "--what",
        "ema-sweep",
        "--format",
        "mlflow",
    ]
    refused = runner.invoke(app, [*export, "--out", str(tmp_path / "m")])
    assert (
        refused.exit_code != 0
        and "--what ema-sweep writes csv or parquet, not mlflow" in refused.stderr
    )


def test_tracking_is_in_the_identity_only_when_on():
    on = expand(parse_study(STUDY, "on.toml"))
    off = expand(parse_study(STUDY.replace("posthoc = true", "posthoc = false"), "off.toml"))
    plain = expand(parse_study(STUDY.replace("[ema]\nposthoc = true\nsnapshots = 4\n", ""), "p"))
    assert [r.run_id for r in off] == [r.run_id for r in plain]  # ids of runs before it stay
    assert not {r.run_id for r in on} & {r.run_id for r in off}
    assert on[0].identity()["posthoc"] == {"posthoc": True, "snapshots": 4, "stds": [0.05, 0.1]}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "stds = [0.5]",
            "ema.stds: an EMA's relative std must be in (0, 0.3003] (the longest a "
            "power-function EMA can be), got 0.5",
        ),
        ("stds = [0.1, 0.1]", "ema.stds: stds must be distinct, got [0.1, 0.1]"),
        ("snapshots = 0", "ema.snapshots: Input should be greater than 0 (got 0)"),
        ("bogus = 1", "unknown key 'ema.bogus'"),
    ],
)
def test_a_bad_ema_section_is_refused(section, message):
    with pytest.raises(ValueError) as refused:
        parse_study(STUDY.replace("snapshots = 4", section), "x.toml")
    assert str(refused.value) == f"x.toml: {message}"


def test_tuning_trials_track_no_posthoc_ema_and_final_runs_do():
    from schedlab.trials import searches

    tuned = parse_study(STUDY + "[tune]\ntrials = 2\ntune_seeds = [100]\n", "tuned.toml")
    assert all(not search.settings.ema.posthoc for search in searches(tuned, "fleet"))
    assert all(
        run.settings.ema.posthoc
        for run in expand(
            tuned,
            chosen={
                (d, label): (1e-3, {}) for d in tuned.datasets for label in ("baseline", "constant")
            },
        )
    )


def test_the_api_reads_the_sweep_as_export_writes_it(swept, tmp_path):
    import schedlab

    study, store = swept
    frame = schedlab.load_ema_sweep(store=store, study=study)
    rows = exported(study, store, tmp_path / "sweep.csv")
    assert list(frame.columns) == list(rows[0]) and len(frame) == len(rows)
    for got, want in zip(frame.itertuples(index=False), rows, strict=True):
        assert got.run_id == want["run_id"] and got.ema_std == float(want["ema_std"])
        assert got.eval_loss_heldout_ema == float(want["eval_loss_heldout_ema"])
        assert math.isnan(got.mmd) and want["mmd"] == ""


def test_ctrl_c_in_a_sweep_says_what_is_kept(swept, monkeypatch):
    import schedlab.execute.sweep

    study, store = swept

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(schedlab.execute.sweep, "sweep_study", interrupted)
    args = ["measure", str(study), "--store", str(store), "--ema-sweep", "0.15"]
    result = runner.invoke(app, args)
    assert result.exit_code == 130
    assert result.stderr == (
        f"interrupted: what was measured is saved in {store}; run the same command to measure "
        "the rest\n"
    )
