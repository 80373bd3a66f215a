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
datasets = ["moons", "{blobs}"]
[data]
n = 600
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
    assert sorted(len(g) for g in groups) == [2, 2]
    assert all(len({r.dim for r in g}) == 1 for g in groups)
    with Store(tmp_path / "s.sqlite") as db:
        assert run_study(study, db).outcomes == {"done": 4}
        records = study_records(db, "dims")[1]
        assert all(np.isfinite(r.metrics["kl_divergence"]) for r in records)
        report = build_report(db, "dims", tmp_path / "report")
    assert report.index.exists() and (tmp_path / "report" / "samples.png").exists()
