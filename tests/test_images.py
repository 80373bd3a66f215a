"""Image datasets and image-quality metrics, checked against independent computations."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from typer.testing import CliRunner

from schedlab import data
from schedlab.cli import app
from schedlab.data import shapes
from schedlab.measure import images


def test_shapes_are_16x16_images_drawn_from_their_factors():
    drawn = data.load("shapes", 50, shape=(1, 16, 16))
    assert drawn.shape == (50, 1, 16, 16) and data.shape("shapes") == (1, 16, 16)
    f = shapes.factors(50, 42)
    np.testing.assert_array_equal(data.get("shapes").labels(50, 42), f["kind"])
    # Every shape lies inside the frame: the border pixels far from it stay dark.
    bright = (drawn[:, 0] > 0).sum(axis=(1, 2))
    assert (bright > 0).all()
    assert np.abs(drawn - data.load("shapes", 50, shape=(1, 16, 16))).max() == 0  # seeded
    assert not np.array_equal(drawn, data.load_heldout("shapes", 50, shape=(1, 16, 16)))


def test_frechet_distance_equals_a_direct_computation_on_known_gaussians():
    rng = np.random.default_rng(0)
    mean_a, mean_b = np.zeros(3), np.array([1.0, -2.0, 0.5])
    cov_a = np.diag([1.0, 2.0, 0.5])
    root = rng.normal(size=(3, 3))
    cov_b = root @ root.T + np.eye(3)
    a = rng.multivariate_normal(mean_a, cov_a, 200_000)
    b = rng.multivariate_normal(mean_b, cov_b, 200_000)
    got = images.frechet_distance(a, b)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    direct = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(
        sa + sb - 2 * np.real(scipy.linalg.sqrtm(sa @ sb))
    )
    assert got == pytest.approx(direct, rel=1e-9)
    population = ((mean_a - mean_b) ** 2).sum() + np.trace(
        cov_a + cov_b - 2 * np.real(scipy.linalg.sqrtm(cov_a @ cov_b))
    )
    assert got == pytest.approx(population, rel=0.02)
    assert images.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_precision_and_recall_are_one_for_identical_sets_and_zero_for_disjoint_clusters():
    rng = np.random.default_rng(1)
    cloud = rng.normal(size=(400, 4))
    assert images.precision_recall(cloud, cloud.copy()) == (1.0, 1.0)
    far = rng.normal(size=(400, 4)) + 100.0
    assert images.precision_recall(cloud, far) == (0.0, 0.0)
    # Generated points covering half of the real cloud: full precision, about half recall.
    half = cloud[cloud[:, 0] > 0]
    precision, recall = images.precision_recall(cloud, half)
    assert precision == 1.0 and 0.5 <= recall < 0.9  # its own half, and a margin around it


def test_class_kl_is_zero_for_matching_proportions_and_large_for_a_missing_mode():
    true = np.repeat(np.arange(4), 250)
    assert images.class_kl(true, true[::-1].copy(), 4) == pytest.approx(0.0, abs=1e-3)
    three = np.repeat(np.arange(3), 333)
    expected = 0.25 * math.log2(0.25 / (0.5 / (999 + 2))) + sum(
        0.25 * math.log2(0.25 / ((333 + 0.5) / (999 + 2))) for _ in range(3)
    )
    assert images.class_kl(true, three, 4) == pytest.approx(expected)


def test_the_feature_network_is_bitwise_the_same_when_trained_twice():
    train = images.trained_network.__wrapped__
    first, accuracy = train("digits", (1, 8, 8))
    second, again = train("digits", (1, 8, 8))
    assert accuracy == again and accuracy > 0.9
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_a_metric_that_does_not_apply_shows_n_a(tmp_path):
    """Image metrics on 2-D points and KL on images: "n/a", never a number or a crash."""
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--dataset",
            "moons",
            "--steps",
            "5",
            "--set",
            "n=500",
            "--set",
            "samples=50",
            "--set",
            "heldout=50",
            "--set",
            "hidden_size=16",
            "--set",
            "emb_size=8",
        ],
    )
    assert result.exit_code == 0, result.output
    cells = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.output.splitlines()
        if line.count("│") == 3
    }
    assert cells["frechet_distance"] == cells["class_kl (bits)"] == "n/a"
    assert cells["precision"] == cells["recall"] == "n/a"
    assert float(cells["kl_divergence (bits)"]) > 0
