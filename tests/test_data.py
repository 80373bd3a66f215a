"""Each dataset against an independent recomputation of SPEC.md's formulas."""

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_moons

from schedlab import data
from schedlab.data import toy2d

N = 5000
SHARED_DINO = Path(__file__).resolve().parents[1] / "src/schedlab/resources/dino.csv"


def spec_moons(n, seed):
    x, _ = make_moons(n, noise=0.03, random_state=seed)
    return np.stack((2 * (x[:, 0] + 0.3) - 1, 3 * (x[:, 1] + 0.3) - 1), axis=1)


def spec_line(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, n) * 4
    y = rng.uniform(-1, 1, n) * 4
    return np.stack((x, y), axis=1)


def spec_circle(n, seed):
    rng = np.random.default_rng(seed)
    x = 2 * np.round(rng.uniform(-0.5, 0.5, n) / 2, 1)
    y = 2 * np.round(rng.uniform(-0.5, 0.5, n) / 2, 1)
    theta = rng.uniform(0, 2 * np.pi, n)
    r = rng.uniform(0, 0.03, n)
    norm = np.hypot(x, y) + 1e-10
    return 3 * np.stack((x / norm + r * np.cos(theta), y / norm + r * np.sin(theta)), axis=1)


def spec_dino(n, seed):
    with SHARED_DINO.open() as f:
        pts = np.array([[float(r["x"]), float(r["y"])] for r in csv.DictReader(f)])
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, 142, n)
    x = pts[ix, 0] + 0.15 * rng.normal(size=n)
    y = pts[ix, 1] + 0.15 * rng.normal(size=n)
    return np.stack(((x / 54 - 1) * 4, (y / 48 - 1) * 4), axis=1)


SPEC = {"moons": spec_moons, "line": spec_line, "circle": spec_circle, "dino": spec_dino}


@pytest.mark.parametrize("name", sorted(SPEC))
def test_dataset_matches_spec(name):
    got = data.load(name, N)
    assert got.shape == (N, 2)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, SPEC[name](N, 42).astype(np.float32), rtol=0, atol=1e-6)


def test_dino_ships_142_points_and_licence():
    assert toy2d.dino_base_points().shape == (142, 2)
    from importlib import resources

    licence = resources.files("schedlab").joinpath("resources/dino.LICENSE").read_text()
    assert "MIT License" in licence and "Datasaurus" in licence


def test_ranges_and_quirks():
    line = data.load("line", N)
    assert line[:, 0].min() >= -2 and line[:, 0].max() <= 2
    assert line[:, 1].min() >= -4 and line[:, 1].max() <= 4
    circle = data.load("circle", 100_000)
    radius = np.hypot(circle[:, 0], circle[:, 1])
    at_origin = radius < 0.1
    assert 0.035 < at_origin.mean() < 0.045  # the (0, 0) grid point: ~4%
    assert np.all(np.abs(radius[~at_origin] - 3) < 0.1)
    angles = np.sort(np.degrees(np.arctan2(circle[~at_origin, 1], circle[~at_origin, 0])))
    gaps = np.diff(np.concatenate([angles, [angles[0] + 360]]))
    assert (gaps > 5).sum() == 16  # 16 clusters on the ring, separated by empty arcs


def test_heldout_is_a_different_draw():
    train, held = data.load("moons", 1000), data.load_heldout("moons", 1000)
    assert held.shape == (1000, 2)
    assert not np.allclose(train, held)


def test_same_seed_same_points():
    np.testing.assert_array_equal(data.load("dino", 300, seed=3), data.load("dino", 300, seed=3))


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(
        ValueError,
        match=r"unknown dataset 'spiral'; valid datasets: circle, digits, dino, line, mixture, "
        r"moons",
    ):
        data.load("spiral")


def test_non_positive_n():
    with pytest.raises(ValueError, match="n must be a positive"):
        data.load("moons", 0)
