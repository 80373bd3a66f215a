"""The diffusion formulas against a direct float64 computation of SPEC.md."""

import numpy as np
import pytest
import torch

from schedlab.model.diffusion import NoiseSchedule, noise_prediction_loss, sample

T = 100


def direct_coefficients(kind):
    if kind == "linear":
        betas = np.linspace(1e-4, 0.02, T)
    else:
        betas = np.linspace(np.sqrt(1e-4), np.sqrt(0.02), T) ** 2
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    return betas, alphas, abar, abar_prev


@pytest.mark.parametrize("kind", ["linear", "quadratic"])
def test_coefficients(kind):
    s = NoiseSchedule(T, beta_schedule=kind, dtype=torch.float64)
    betas, alphas, abar, abar_prev = direct_coefficients(kind)
    np.testing.assert_allclose(s.betas.numpy(), betas, rtol=1e-12)
    np.testing.assert_allclose(s.abar.numpy(), abar, rtol=1e-12)
    np.testing.assert_allclose(
        s.posterior_c0.numpy(), betas * np.sqrt(abar_prev) / (1 - abar), rtol=1e-12
    )
    np.testing.assert_allclose(
        s.posterior_ct.numpy(), (1 - abar_prev) * np.sqrt(alphas) / (1 - abar), rtol=1e-12
    )
    var = np.maximum(betas * (1 - abar_prev) / (1 - abar), 1e-20)
    np.testing.assert_allclose(s.posterior_std.numpy() ** 2, var, rtol=1e-12)


def test_add_noise_and_step_against_direct_formulas():
    s = NoiseSchedule(T, dtype=torch.float64)
    betas, alphas, abar, abar_prev = direct_coefficients("linear")
    rng = np.random.default_rng(0)
    x0, eps = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    t = np.array([0, 1, 10, 50, 98, 99])
    xt = s.add_noise(torch.tensor(x0), torch.tensor(eps), torch.tensor(t)).numpy()
    np.testing.assert_allclose(
        xt, np.sqrt(abar[t])[:, None] * x0 + np.sqrt(1 - abar[t])[:, None] * eps, rtol=1e-12
    )
    x, eps_hat, z = rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    for step in (99, 40, 1, 0):
        x0_hat = np.sqrt(1 / abar[step]) * x - np.sqrt(1 / abar[step] - 1) * eps_hat
        c0 = betas[step] * np.sqrt(abar_prev[step]) / (1 - abar[step])
        ct = (1 - abar_prev[step]) * np.sqrt(alphas[step]) / (1 - abar[step])
        var = max(betas[step] * (1 - abar_prev[step]) / (1 - abar[step]), 1e-20)
        expected = c0 * x0_hat + ct * x + (np.sqrt(var) * z if step > 0 else 0)
        got = s.step(
            torch.tensor(eps_hat), step, torch.tensor(x), torch.tensor(z) if step else None
        )
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_loss_is_mse_of_noise_prediction():
    s = NoiseSchedule(T, dtype=torch.float64)
    x0 = torch.randn(8, 2, dtype=torch.float64)
    eps = torch.randn(8, 2, dtype=torch.float64)
    t = torch.randint(0, T, (8,))

    def model(x, tt):
        return 0.5 * x

    xt = s.sqrt_abar[t, None] * x0 + s.sqrt_one_minus_abar[t, None] * eps
    expected = ((0.5 * xt - eps) ** 2).mean()
    torch.testing.assert_close(noise_prediction_loss(model, s, x0, t, eps), expected)


def test_sampling_with_a_perfect_denoiser_of_a_point_mass():
    """For data at the origin, eps = x_t / sqrt(1 - abar_t) exactly; sampling must return ~0."""
    s = NoiseSchedule(T, dtype=torch.float64)

    def oracle(x, t):
        return x / s.sqrt_one_minus_abar[t][:, None]

    out = sample(oracle, s, 500, torch.Generator().manual_seed(0), dtype=torch.float64, chunk=128)
    assert out.shape == (500, 2)
    assert out.abs().max() < 1e-6


def test_chunking_does_not_change_samples():
    s = NoiseSchedule(T)

    def model(x, t):
        return torch.tanh(x) * (t[:, None] / T)

    a = sample(model, s, 300, torch.Generator().manual_seed(1), chunk=300)
    b = sample(model, s, 300, torch.Generator().manual_seed(1), chunk=64)
    torch.testing.assert_close(a, b)


def test_bad_schedule_settings():
    with pytest.raises(ValueError, match="unknown beta_schedule 'cubic'; valid choices"):
        NoiseSchedule(T, beta_schedule="cubic")
    with pytest.raises(ValueError, match="timesteps must be >= 2"):
        NoiseSchedule(1)


def test_schedule_moves_with_its_coefficients():
    s = NoiseSchedule(T)
    moved = s.to("cpu")
    assert moved is not s and moved.timesteps == T
    for name in ("betas", "abar", "posterior_std", "sqrt_one_minus_abar"):
        assert torch.equal(getattr(moved, name), getattr(s, name))
