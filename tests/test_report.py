"""Reports: table cells recomputed from the store, statistics on known cases, files read back."""

import csv
import html
import io
import json
import math
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from schedlab.cli import app
from schedlab.config.settings import EvalSettings
from schedlab.metrics import METRICS
from schedlab.report.build import build_report
from schedlab.report.data import PAIRED_METRICS, TABLE_METRICS, load_study_view
from schedlab.report.html import TIME_TO_TARGET
from schedlab.report.stats import (
    mean_ranks,
    min_p_value,
    paired_comparison,
    performance_profile,
    summarize,
)
from schedlab.report.tables import (
    PROFILE_TAUS,
    SummaryRow,
    profile_gap,
    profiles_by_metric,
    ranks_by_metric,
    summary_rows,
)
from schedlab.store.store import Store
from schedlab.testing import synthetic_store

IMAGES = ("frechet_distance", "precision", "recall", "class_kl")  # n/a on 2-D points

runner = CliRunner()


@pytest.fixture(scope="module")
def report(tmp_path_factory, synthetic_store):
    out = tmp_path_factory.mktemp("report")
    with Store(synthetic_store, create=False) as db:
        build_report(db, "synthetic", out, compare_paper=True)
    return out


def store_values(path):
    """(label, dataset, metric) -> values of done runs, read with plain sqlite3."""
    con = sqlite3.connect(path)
    rows = con.execute(
        "SELECT p.label, r.dataset, m.metric, m.value FROM plan_runs p JOIN runs r USING (run_id) "
        "JOIN measurements m USING (run_id) JOIN studies s USING (plan_id) "
        "WHERE r.status = 'done' AND s.name = 'synthetic' AND m.value IS NOT NULL"
    ).fetchall()
    out = {}
    for label, dataset, key, value in rows:
        out.setdefault((label, dataset, key), []).append(value)
    # Time to target, recomputed from the raw blobs: the first curve point at or below the
    # baseline's mean final held-out EMA loss x 1.01, and seconds at the run's step rate.
    curves = con.execute(
        "SELECT p.label, r.dataset, r.training_time, r.settings, c.heldout FROM plan_runs p "
        "JOIN runs r USING (run_id) JOIN curves c USING (run_id) JOIN studies s USING (plan_id) "
        "WHERE r.status = 'done' AND s.name = 'synthetic'"
    ).fetchall()
    con.close()
    for label, dataset, seconds, settings, blob in curves:
        target = 1.01 * np.mean(out[("baseline", dataset, "eval_loss_heldout_ema")])
        curve = np.load(io.BytesIO(zlib.decompress(blob)))
        below = [step for step, loss in curve if loss <= target]
        if below:
            steps = json.loads(settings)["train"]["steps"]
            out.setdefault((label, dataset, "steps_to_target"), []).append(below[0])
            out.setdefault((label, dataset, "seconds_to_target"), []).append(
                below[0] * seconds / steps
            )
    return out


def test_summary_cells_match_an_independent_recomputation(report, synthetic_store):
    values = store_values(synthetic_store)
    rows = list(csv.DictReader((report / "summary.csv").open()))
    assert len(rows) == 4 * 4 * len(TABLE_METRICS)  # cosine is the baseline's runs: shown once
    checked = 0
    for row in rows:
        x = np.array(values.get((row["schedule"], row["dataset"], row["metric"]), []))
        assert int(row["n"]) == len(x)
        if len(x) == 0:
            continue
        assert float(row["mean"]) == pytest.approx(x.mean(), rel=1e-12)
        assert float(row["std"]) == pytest.approx(x.std(ddof=1), rel=1e-9)
        # The 95% Student-t interval, written out: mean -+ t(0.975, n-1) s / sqrt(n).
        half = scipy_stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
        assert float(row["ci_low"]) == pytest.approx(x.mean() - half, rel=1e-9)
        assert float(row["ci_high"]) == pytest.approx(x.mean() + half, rel=1e-9)
        checked += 1
    # Every stored metric's cell was checked but log_density's (no known density here), and
    # the time-to-target cells of the runs whose curves reach the target: the synthetic
    # baseline's (cosine names the same runs); every other schedule ends above it.
    reached = [r for r in rows if r["metric"] == "steps_to_target" and r["n"] != "0"]
    assert {r["schedule"] for r in reached} == {"baseline"} and len(reached) == 4
    assert checked == 4 * 4 * (len(TABLE_METRICS) - 3 - len(IMAGES)) + 2 * len(reached)
    measured = [r for r in rows if r["metric"] not in ("log_density", *IMAGES, *TIME_TO_TARGET)]
    failed = [r for r in measured if r["schedule"] == "step" and r["dataset"] == "moons"]
    diverged = [r for r in measured if r["schedule"] == "plateau" and r["dataset"] == "line"]
    assert {r["n"] for r in failed} == {"2"} and {r["n"] for r in diverged} == {"2"}


@pytest.mark.parametrize("n", [2, 3, 10])
def test_intervals_cover_the_true_mean_95_percent_of_the_time(n):
    """Normal data, 4,000 simulated studies: the interval must hold the true mean 93-97% of
    the time (the percentile bootstrap this replaced held it 56% of the time at n = 2)."""
    rng = np.random.default_rng(n)
    samples = rng.normal(loc=1.7, scale=0.3, size=(4000, n))
    covered = [s.ci_low <= 1.7 <= s.ci_high for s in (summarize(list(row)) for row in samples)]
    assert 0.93 <= np.mean(covered) <= 0.97
    d = rng.normal(loc=-0.2, scale=0.5, size=(1000, n))  # each also runs the exact p-value
    pairs = [paired_comparison(dict(enumerate(row)), dict.fromkeys(range(n), 0.0)) for row in d]
    assert 0.93 <= np.mean([p.ci_low <= -0.2 <= p.ci_high for p in pairs]) <= 0.97


def test_summaries_of_few_values():
    assert summarize([1.5]).n == 1 and math.isnan(summarize([1.5]).ci_low)
    assert summarize([math.nan, 2.0, 4.0]).mean == 3.0
    assert summarize([2.0, 2.0]).ci_low == summarize([2.0, 2.0]).ci_high == 2.0


def test_paired_comparison_known_answers():
    baseline = {s: 10.0 + s for s in range(7)}
    schedule = {s: 10.0 + s + d for s, d in zip(range(6), [1, 2, 3, 4, 5, 6], strict=True)}
    result = paired_comparison(schedule, baseline)  # seed 6 is not shared
    assert result.n == 6
    assert result.mean_diff == pytest.approx(3.5)
    assert result.p_value == pytest.approx(2 / 64)  # all 6 differences positive: exact
    assert result.warning is None
    assert result.ci_low > 0
    mixed = paired_comparison({0: 1.0, 1: 3.0, 2: 2.0}, {0: 2.0, 1: 1.0, 2: 1.0})
    assert mixed.p_value == pytest.approx(0.75)  # d = -1, 2, 1: 6 of 8 sign flips as extreme
    assert "only 3 paired seeds" in mixed.warning and "0.25" in mixed.warning
    assert min_p_value(5) == pytest.approx(0.0625)
    assert paired_comparison({0: 1.0}, {1: 1.0}).warning == "no shared seeds"


def test_ranks_under_every_metric_follow_its_direction():
    rows = [
        SummaryRow(label, dataset, metric, value, 0.0, value, value, 2)
        for metric, values in {
            "kl_divergence": {"a": 1.0, "b": 2.0},
            "log_density": {"a": 1.0, "b": 2.0},  # higher is better: b wins
            "training_time": {"a": 5.0, "b": 5.0},
        }.items()
        for label, value in values.items()
        for dataset in ("x", "y")
    ]
    ranks = ranks_by_metric(["a", "b"], rows)
    assert ranks["kl_divergence"] == {"a": 1.0, "b": 2.0}
    assert ranks["log_density"] == {"a": 2.0, "b": 1.0}
    assert ranks["training_time"] == {"a": 1.5, "b": 1.5}


def test_ranks_and_performance_profile_known_answers():
    scores = {"a": {"x": 1.0, "y": 2.0}, "b": {"x": 2.0, "y": 2.0}, "c": {"x": 3.0}}
    assert mean_ranks(scores) == {"a": 1.25, "b": 1.75, "c": 3.0}
    profile = performance_profile(
        {"a": {"x": 1.0, "y": 4.0}, "b": {"x": 2.0, "y": 2.0}}, [1.0, 2.0, 3.0]
    )
    assert profile == {"a": [0.5, 1.0, 1.0], "b": [0.5, 1.0, 1.0]}


def test_every_metric_has_a_performance_profile_of_its_gap_or_value(synthetic_store):
    with Store(synthetic_store, create=False, read_only=True) as db:
        view = load_study_view(db, "synthetic")
    rows = summary_rows(view)
    floor = view.floor("kl_divergence", "moons")
    assert profile_gap(view, "kl_divergence", "moons", floor + 0.5) == pytest.approx(0.5)
    assert profile_gap(view, "kl_divergence", "moons", floor - 0.2) == 0.01  # at the floor
    assert profile_gap(view, "eval_loss_heldout_ema", "moons", 0.3) == 0.3  # no floor: itself
    assert math.isnan(profile_gap(view, "kl_floor", "moons", 0.3))  # not a score
    profiles = profiles_by_metric(view, rows)
    assert "log_density" not in profiles  # no value in 2-D
    # Only the baseline's runs (cosine names the same runs: shown once) reach the target: best
    # on every dataset; the others never reach it, so never within any factor.
    steps = profiles["steps_to_target"]
    assert steps["baseline"] == [1.0] * len(PROFILE_TAUS) and "cosine" not in steps
    assert steps["step"] == [0.0] * len(PROFILE_TAUS)
    # The synthetic schedules are ordered by quality: the baseline is best everywhere on KL.
    assert profiles["kl_divergence"]["baseline"][0] == 1.0


def test_tables_and_page_read_back(report):
    md = (report / "tables.md").read_text()
    assert "| schedule | circle | dino | line | moons |" in md and "*bias floor*" in md
    tex = (report / "tables.tex").read_text()
    # no log_density and no image metric in 2-D
    assert tex.count("\\toprule") == len(TABLE_METRICS) - 1 - len(IMAGES)
    assert "$\\pm$" in tex
    page = (report / "index.html").read_text()
    assert "RuntimeError: synthetic failure" in page and "loss became nan at step 49" in page
    assert "47 of 48 planned runs finished" in page
    assert "Performance profiles under every metric" in page
    assert '<h2 id="time-to-target">Time to target</h2>' in page and "(0 of 3)" in page
    assert '<a href="#time-to-target">Time to target</a>' in page  # in the contents
    assert "Holm-corrected over the family of 12 comparisons" in page  # 3 schedules x 4
    assert page.count("data:image/png;base64,") == 5
    assert "http://" not in page and "https://" not in page
    for name in ("samples", "loss", "lr", "kl", "heldout"):
        assert (report / f"{name}.png").stat().st_size > 5000
        assert (report / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    paired = list(csv.DictReader((report / "paired.csv").open()))
    assert {r["baseline"] for r in paired} == {"baseline"}
    # cosine is the baseline's own runs: not compared; image metrics do not apply in 2-D
    assert len(paired) == 3 * 4 * len(set(PAIRED_METRICS) - set(IMAGES))
    assert "cosine names the same runs as baseline" in page
    for key in TABLE_METRICS.keys() - {"log_density", *IMAGES}:  # each shown one described
        assert html.escape(METRICS[key].description) in page, key


def test_every_registered_metric_is_described_and_its_floor_registered():
    for metric in METRICS.values():
        assert metric.description and metric.title, metric.key
        assert metric.floor is None or METRICS[metric.floor].direction is None
        assert metric.key_for(EvalSettings()) != metric.key_for(EvalSettings(samples=7)) or (
            "samples" not in metric.reads
        )


def test_compare_paper_shows_the_published_numbers(report, synthetic_store):
    page = (report / "index.html").read_text()
    assert "Against the paper" in page
    values = store_values(synthetic_store)
    ours = np.mean(values[("baseline", "dino", "kl_divergence")])
    assert f"<td>1.063</td><td>{ours:.3f}</td><td>{ours - 1.063:.3f}</td>" in page


def test_partial_study_says_what_is_missing(tmp_path):
    path = synthetic_store(tmp_path / "s.sqlite", seeds=2, steps=200, samples=300)
    con = sqlite3.connect(path)
    con.execute(
        "UPDATE runs SET status = 'pending' WHERE run_id IN "
        "(SELECT run_id FROM plan_runs WHERE label = 'exponential' LIMIT 3)"
    )
    con.commit()
    con.close()
    with Store(path, create=False) as db:
        result = build_report(db, "synthetic", tmp_path / "r")
    page = result.index.read_text()
    assert "This study is partial" in page and "28 of 32 planned runs finished" in page


TINY_STUDY = Path(__file__).parent / "fixtures" / "tiny_study.toml"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """(study file, store) of a tiny study trained through the CLI."""
    folder = tmp_path_factory.mktemp("tiny")
    path, store = folder / "tiny.toml", folder / "tiny.sqlite"
    path.write_text(TINY_STUDY.read_text())
    assert runner.invoke(app, ["run", str(path), "--store", str(store)]).exit_code == 0
    return path, store


def test_report_cli_never_imports_torch(tmp_path, tiny_study):
    path, store = tiny_study
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom schedlab.cli import app\n"
        f"r = CliRunner().invoke(app, ['report', {str(path)!r}, '--store', "
        f"{str(store)!r}, '--out', {str(tmp_path / 'r')!r}])\n"
        "assert r.exit_code == 0, r.output\nprint(sorted(m for m in sys.modules "
        "if m.split('.')[0] == 'torch'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "r" / "index.html").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "{tmp}/none.sqlite"], "error: no store at"),
        (["--baseline", "warp"], "error: unknown baseline 'warp'; schedules: baseline, step"),
    ],
)
def test_report_bad_input(tmp_path, tiny_study, args, message):
    path, store = tiny_study
    full = ["report", str(path), "--store", str(store), "--out", str(tmp_path / "r")]
    full += [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, full)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert not (tmp_path / "none.sqlite").exists()


def test_a_one_dataset_report_cuts_no_figure_title(tmp_path, tiny_study):
    """Measured on the PNGs: no dark pixel touches the left or right edge in the title band
    (a title wider than its figure runs off both edges)."""
    from matplotlib.image import imread

    path, store = tiny_study
    out = tmp_path / "r"
    result = runner.invoke(app, ["report", str(path), "--store", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    pngs = sorted(out.glob("*.png"))
    assert {p.stem for p in pngs} >= {"samples", "loss", "lr", "kl", "heldout"}
    for png in pngs:
        pixels = imread(png)[..., :3]
        band = pixels[: max(8, pixels.shape[0] // 10)]  # the suptitle's rows
        edges = np.concatenate([band[:, :3], band[:, -3:]], axis=1)
        assert edges.min() > 0.9, f"{png.name}: the title reaches the figure's edge"
