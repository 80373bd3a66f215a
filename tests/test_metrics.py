import math

import numpy as np
import pytest
import torch

from schedlab.measure.distances import SampleDistances, directions, sliced_wasserstein
from schedlab.measure.kl import KLReference, kl_divergence
from schedlab.measure.losses import HeldoutLoss, reference_eval_losses
from schedlab.model.denoiser import Denoiser
from schedlab.model.diffusion import NoiseSchedule
from schedlab.training.seeding import generator


def gaussian_kl_bits(mu_p, var_p, mu_q, var_q, d=2):
    """KL(N(mu_p, var_p I) || N(mu_q, var_q I)) in bits, closed form."""
    nats = 0.5 * (
        d * var_p / var_q + np.sum((mu_q - mu_p) ** 2) / var_q - d + d * math.log(var_q / var_p)
    )
    return nats / math.log(2)


def test_kl_of_two_gaussians_matches_closed_form():
    rng = np.random.default_rng(0)
    mu_q = np.array([0.5, 0.0])
    real = rng.normal(size=(40_000, 2))
    gen = mu_q + 1.5 * rng.normal(size=(40_000, 2))
    expected = gaussian_kl_bits(np.zeros(2), 1.0, mu_q, 2.25)
    assert expected == pytest.approx(0.4486, abs=1e-4)
    assert kl_divergence(real, gen) == pytest.approx(expected, abs=0.05)


def test_kl_of_one_distribution_is_near_zero():
    rng = np.random.default_rng(1)
    real, gen = rng.normal(size=(30_000, 2)), rng.normal(size=(30_000, 2))
    assert abs(kl_divergence(real, gen)) < 0.03


def test_kl_formula_on_a_tiny_case():
    """The estimator written out by brute force on 6 points (k=1, Chebyshev)."""
    real = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    gen = np.array([[0.5, 0.1], [2.0, 2.0], [0.0, 1.0]])
    cheb = lambda a, b: np.max(np.abs(a[:, None] - b[None]), axis=-1)  # noqa: E731
    rr = cheb(real, real) + np.diag([np.inf] * 4)
    rho, nu = rr.min(1), cheb(real, gen).min(1)
    expected = (math.log(3 / 3) + 2 * (np.log(nu).mean() - np.log(rho).mean())) / math.log(2)
    assert kl_divergence(real, gen, k=1) == pytest.approx(expected, rel=1e-12)


def test_duplicates_do_not_give_inf():
    rng = np.random.default_rng(2)
    real = np.repeat(rng.normal(size=(100, 2)), 10, axis=0)  # every point 10 times
    gen = np.concatenate([real[:50], real[:50]])
    value = kl_divergence(real, gen)
    assert math.isfinite(value)


def test_nan_samples_give_a_clear_error():
    real = np.random.default_rng(3).normal(size=(100, 2))
    gen = real[:50].copy()
    gen[7] = np.nan
    gen[9, 1] = np.inf
    with pytest.raises(ValueError, match="2 of 50 generated points are NaN/inf"):
        KLReference(real).kl(gen)


def test_wrong_shapes():
    with pytest.raises(ValueError, match="generated points must have shape"):
        kl_divergence(np.zeros((10, 2)) + np.arange(10)[:, None], np.zeros((10, 3)))


def tiny_denoisers(count, dtype):
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(Denoiser(emb_size=8, hidden_size=16, hidden_layers=2).to(dtype))
    return models


def test_reference_eval_loss_is_the_mean_of_batch_means_of_the_models_errors():
    s = NoiseSchedule(100, dtype=torch.float64)
    points = torch.randn(1000, 2, dtype=torch.float64)
    models = tiny_denoisers(2, torch.float64)
    got = reference_eval_losses(models, [points, points * 2], [5, 6], s, 256)
    # Recomputed with each model's own forward and the run's draws: batches of 256 (the last
    # one 232), equal weight each.
    for model, x0, seed, value in zip(models, [points, points * 2], [5, 6], got, strict=True):
        g = generator(seed, "eval")
        t = torch.randint(0, 100, (1000,), generator=g)
        eps = torch.randn(1000, 2, generator=g, dtype=torch.float64)
        xt = s.sqrt_abar[t, None] * x0 + s.sqrt_one_minus_abar[t, None] * eps
        with torch.no_grad():
            per = ((model(xt, t) - eps) ** 2).mean(1)
        expected = np.mean([per[i : i + 256].mean().item() for i in range(0, 1000, 256)])
        assert value == pytest.approx(expected, rel=1e-12)


def test_a_runs_reference_eval_loss_does_not_depend_on_the_runs_measured_with_it():
    s = NoiseSchedule(100)
    points = [torch.randn(3000, 2, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    models = tiny_denoisers(5, torch.float32)
    together = reference_eval_losses(models, points, list(range(5)), s, 256)
    reversed_order = reference_eval_losses(models[::-1], points[::-1], [4, 3, 2, 1, 0], s, 256)
    for k in range(5):
        alone = reference_eval_losses([models[k]], [points[k]], [k], s, 256)
        assert together[k] == alone[0] == reversed_order[4 - k]


def test_heldout_loss_uses_fixed_draws():
    s = NoiseSchedule(100)
    pts = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    a, b = HeldoutLoss(pts, s, torch.float32), HeldoutLoss(pts, s, torch.float32)
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731
    assert a(model) == b(model)
    assert a(model) == pytest.approx(float((a.eps.double() ** 2).mean()), rel=1e-6)


def test_sliced_wasserstein_in_1d_is_the_exact_wasserstein_2():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(300, 1)), 0.7 + 1.3 * rng.normal(size=(300, 1))
    exact = math.sqrt(np.mean((np.sort(a[:, 0]) - np.sort(b[:, 0])) ** 2))
    assert SampleDistances(a).sliced_wasserstein(b) == pytest.approx(exact, rel=1e-9)


def test_sliced_wasserstein_equals_pots_on_sets_of_different_sizes():
    import ot  # POT, a dev dependency

    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(777, 3)), 1.5 * rng.normal(size=(1234, 3))
    want = ot.sliced_wasserstein_distance(a, b, projections=directions(3))
    assert sliced_wasserstein(a, b) == pytest.approx(want, rel=1e-10)


def test_sliced_wasserstein_of_shifted_gaussians():
    """Shifted by mu, direction theta sees W2 = |<theta, mu>|; E<theta, mu>^2 = |mu|^2 / d."""
    rng = np.random.default_rng(6)
    real = rng.normal(size=(20_000, 2))
    shifted = rng.normal(size=(20_000, 2)) + np.array([1.0, 0.0])
    assert SampleDistances(real).sliced_wasserstein(shifted) == pytest.approx(
        math.sqrt(0.5), rel=0.05
    )


def test_mmd_equals_the_direct_double_sum():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(40, 3)), 0.5 + rng.normal(size=(30, 3))
    distances = SampleDistances(x)
    h = np.median([np.linalg.norm(x[i] - x[j]) for i in range(40) for j in range(i + 1, 40)])

    def k(u, v):
        return math.exp(-np.sum((u - v) ** 2) / (2 * h * h))

    xx = sum(k(x[i], x[j]) for i in range(40) for j in range(40) if i != j) / (40 * 39)
    yy = sum(k(y[i], y[j]) for i in range(30) for j in range(30) if i != j) / (30 * 29)
    xy = sum(k(x[i], y[j]) for i in range(40) for j in range(30)) / (40 * 30)
    assert distances.mmd(y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    # Unbiased: two samples of one distribution score about 0, either side of it.
    same = SampleDistances(rng.normal(size=(2000, 3))).mmd(rng.normal(size=(2000, 3)))
    assert abs(same) < 2e-3


def test_sample_distances_refuse_bad_points_clearly():
    distances = SampleDistances(np.random.default_rng(8).normal(size=(100, 2)))
    bad = np.zeros((10, 2))
    bad[3] = np.nan
    with pytest.raises(ValueError, match="1 of 10 generated points are NaN/inf"):
        distances.mmd(bad)
    with pytest.raises(ValueError, match=r"generated points must have shape \[m, 2\]"):
        distances.sliced_wasserstein(np.zeros((10, 3)))
