"""Data of any dimension: a test-only 3-D dataset through the denoiser, both engines, a study."""

import numpy as np
import pytest
import torch

from schedlab import data
from schedlab.config.settings import TrainSettings
from schedlab.config.study import parse_study
from schedlab.execute.local import run_study
from schedlab.model.denoiser import Denoiser, parameter_count
from schedlab.plan import expand, fleets
from schedlab.report.build import build_report
from schedlab.report.data import study_records
from schedlab.schedules.registry import resolve
from schedlab.store.store import Store
from schedlab.training.common import Member
from schedlab.training.fleet.shards import train_fleet
from schedlab.training.loop import train_reference


def blobs3d(n: int, seed: int) -> np.ndarray:
    """Two Gaussian blobs in 3-D."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-1.5, 0.0, 1.0], [1.5, 0.5, -1.0]])
    return centres[rng.integers(0, 2, n)] + 0.3 * rng.normal(size=(n, 3))


@pytest.fixture
def blobs(monkeypatch):
    monkeypatch.setitem(data.DATASETS, "blobs3d", data.Dataset("blobs3d", 3, blobs3d))
    return "blobs3d"


def test_a_registered_dataset_declares_its_dimension(blobs):
    points = data.load(blobs, 100)
    assert points.shape == (100, 3) and points.dtype == np.float32 and data.dim(blobs) == 3
    with pytest.raises(ValueError, match="dataset 'circle' is registered already"):
        data.register(data.Dataset("circle", 2, blobs3d))


def test_the_denoiser_takes_points_of_any_dimension():
    for dim in (1, 2, 3, 5):
        model = Denoiser(8, 16, 1, in_dim=dim)
        out = model(torch.randn(7, dim), torch.randint(0, 100, (7,)))
        assert out.shape == (7, dim)
        # (d + 1) embeddings of 8 -> 16, one block 16 -> 16, 16 -> d.
        assert parameter_count(model) == ((dim + 1) * 8 + 1) * 16 + 17 * 16 + 17 * dim


@pytest.mark.parametrize("dim", [2, 3])
def test_float64_fleet_equals_the_reference_loop_at_dim(dim, blobs):
    name = "moons" if dim == 2 else blobs
    settings = TrainSettings(
        steps=60, batch_size=50, emb_size=8, hidden_size=16, hidden_layers=2, dtype="float64"
    )
    points = data.load(name, 400)
    schedules = [resolve("cosine"), resolve("step", {"step_size": 20})]
    members = [Member(points, s, seed, 1e-3) for seed, s in enumerate(schedules)]
    fleet = train_fleet(members, settings)
    for member, got in zip(members, fleet, strict=True):
        run_settings = settings.model_copy(update={"lr": member.lr})
        want = train_reference(points, member.schedule, run_settings, member.seed)
        np.testing.assert_allclose(got.losses, want.losses, rtol=0, atol=1e-9)
        for a, b in zip(got.ema_model.parameters(), want.ema_model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_a_study_mixing_dimensions_trains_fleets_by_dimension(blobs, tmp_path):
    text = f"""name = "dims"
datasets = ["moons", "{blobs}", "mixture"]
[data]
n = 600
dim = 4
[train]
steps = 40
emb_size = 8
hidden_size = 16
hidden_layers = 1
[eval]
samples = 100
heldout = 100
[[schedules]]
name = "cosine"
[[schedules]]
name = "constant"
"""
    study = parse_study(text, "dims")
    groups = fleets(expand(study), 20)
    assert sorted(len(g) for g in groups) == [2, 2, 2]
    assert all(len({r.dim for r in g}) == 1 for g in groups)
    with Store(tmp_path / "s.sqlite") as db:
        assert run_study(study, db).outcomes == {"done": 6}
        records = study_records(db, "dims")[1]
        assert all(np.isfinite(r.metrics["kl_divergence"]) for r in records)
        report = build_report(db, "dims", tmp_path / "report")
    assert report.index.exists() and (tmp_path / "report" / "samples.png").exists()
    # The true log-density exists for the mixture only: the others' cells say it does not apply.
    tables = (tmp_path / "report" / "tables.md").read_text()
    section = tables.split("## Mean log-density")[1].split("##")[0]
    cosine = next(line for line in section.splitlines() if line.startswith("| cosine |"))
    cells = [c.strip() for c in cosine.strip("|").split("|")]
    assert cells[1:3] == ["n/a", "n/a"] and float(cells[3].split(" ± ")[0]) < 0


def test_digits_are_64_d_with_a_held_out_split_of_other_images():
    train, heldout = data.load("digits", 3000), data.load_heldout("digits", 3000)
    assert train.shape == heldout.shape == (3000, 64)
    assert train.min() >= -4.25 and train.max() <= 4.25
    grey = lambda x: np.round((x.astype(np.float64) / 4 + 1) / 2 * 16)  # noqa: E731
    images = lambda x: {tuple(row) for row in grey(x)}  # noqa: E731
    assert not images(train) & images(heldout)  # no image is in both splits
    assert len(images(train)) > 1000 and len(images(heldout)) > 300


def test_mixture_log_density_of_real_points_matches_the_analytic_expectation():
    from schedlab.data import mixture

    points = data.load("mixture", 20_000, dimension=8).astype(np.float64)
    log_p = mixture.log_density(points)
    _, covariances = mixture.parameters(8)
    # Components this far apart barely overlap: E[log p] = log(1/8) + the mean entropy term.
    entropy = [0.5 * (8 * np.log(2 * np.pi * np.e) + np.linalg.slogdet(c)[1]) for c in covariances]
    expected = -np.log(8) - np.mean(entropy)
    assert abs(log_p.mean() - expected) < 4 * log_p.std() / np.sqrt(len(log_p))
    assert data.load("mixture", 10, dimension=3).shape == (10, 3)


def test_dim_is_refused_where_no_dataset_takes_one():
    text = 'name = "x"\ndatasets = ["moons"]\n[data]\ndim = 4\n[[schedules]]\nname = "cosine"\n'
    with pytest.raises(ValueError, match="dim = 4 is set, but moons have fixed dimensions; "):
        parse_study(text, "x")


@pytest.mark.parametrize(("name", "dim"), [("digits", None), ("mixture", 5)])
def test_higher_dimensional_datasets_train_alike_in_both_engines(name, dim):
    settings = TrainSettings(
        steps=30, batch_size=32, emb_size=8, hidden_size=16, hidden_layers=1, dtype="float64"
    )
    points = data.load(name, 300, dimension=dim)
    member = Member(points, resolve("cosine"), 0, 1e-3)
    (fleet,) = train_fleet([member], settings)
    loop = train_reference(points, member.schedule, settings.model_copy(update={"lr": 1e-3}), 0)
    np.testing.assert_allclose(fleet.losses, loop.losses, rtol=0, atol=1e-9)


def test_train_reports_every_metric_on_mixture_and_digits():
    import json

    from typer.testing import CliRunner

    from schedlab.cli import app

    small = ["--steps", "20", "--set", "n=500", "--set", "samples=100", "--set", "heldout=100"]
    for args in (["--dataset", "mixture", "--set", "dim=4"], ["--dataset", "digits"]):
        result = CliRunner().invoke(
            app, ["train", *args, *small, "--set", "hidden_size=16", "--json"]
        )
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        for key in ("kl_divergence", "sliced_wasserstein", "mmd", "eval_loss_heldout_ema"):
            assert isinstance(payload[key], float), key
        density = payload["log_density"], payload["log_density_floor"]
        if args[1] == "mixture":
            assert all(isinstance(v, float) for v in density) and density[0] < density[1]
        else:
            assert density == (None, None)  # no known density for digits


def test_datasets_command_lists_every_dataset():
    from typer.testing import CliRunner

    from schedlab.cli import app

    result = CliRunner().invoke(app, ["datasets"], terminal_width=200)
    assert result.exit_code == 0
    for name in data.names():
        assert name in result.stdout
    assert "any ([data]" in result.stdout  # the markup-like text printed as it is


def test_a_fixed_dimension_dataset_ignores_the_dim_setting_in_its_identity():
    text = 'name = "c"\ndatasets = ["digits", "mixture"]\n[[schedules]]\nname = "cosine"\n'
    with_dim = expand(parse_study(text + "[data]\ndim = 8\n", "a.toml"))
    alone = expand(parse_study(text.replace(', "mixture"', ""), "b.toml"))
    assert with_dim[0].dataset == alone[0].dataset == "digits"
    assert with_dim[0].run_id == alone[0].run_id
    finer = expand(parse_study(text + "[data]\ndim = 4\n", "c.toml"))
    assert finer[1].run_id != with_dim[1].run_id  # the mixture's dimension is its identity
