"""DDPM noise schedule, forward noising, the noise-prediction loss and ancestral sampling."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

BetaSchedule = Literal["linear", "quadratic"]
Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NoiseSchedule:
    """The coefficients of a T-step DDPM, precomputed once (as diffusers' DDPMScheduler does)."""

    def __init__(
        self,
        timesteps: int = 100,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: BetaSchedule = "linear",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if timesteps < 2:
            raise ValueError(f"timesteps must be >= 2, got {timesteps}")
        if beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        elif beta_schedule == "quadratic":
            betas = (
                torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
            )
        else:
            raise ValueError(
                f"unknown beta_schedule {beta_schedule!r}; valid choices: linear, quadratic"
            )
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, dim=0)
        abar_prev = F.pad(abar[:-1], (1, 0), value=1.0)
        self.timesteps = timesteps
        self.beta_schedule = beta_schedule
        # Coefficients are computed in float64 and stored in the training dtype.
        coefs = {
            "betas": betas,
            "alphas": alphas,
            "abar": abar,
            "abar_prev": abar_prev,
            "sqrt_abar": abar.sqrt(),
            "sqrt_one_minus_abar": (1 - abar).sqrt(),
            "sqrt_inv_abar": (1 / abar).sqrt(),
            "sqrt_inv_abar_minus_one": (1 / abar - 1).sqrt(),
            "posterior_c0": betas * abar_prev.sqrt() / (1 - abar),
            "posterior_ct": (1 - abar_prev) * alphas.sqrt() / (1 - abar),
            "posterior_std": (betas * (1 - abar_prev) / (1 - abar)).clamp(min=1e-20).sqrt(),
        }
        self._names = tuple(coefs)
        for name, value in coefs.items():
            setattr(self, name, value.to(dtype))

    def to(self, device: str | torch.device) -> NoiseSchedule:
        """The same schedule with its coefficients on ``device``."""
        moved = copy.copy(self)
        for name in self._names:
            setattr(moved, name, getattr(self, name).to(device))
        return moved

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, for x0 and eps [*t.shape, *shape]
        (any rank: diffusers' add_noise)."""
        return (
            per_sample(self.sqrt_abar[t], x0) * x0
            + per_sample(self.sqrt_one_minus_abar[t], x0) * eps
        )

    def step(
        self, eps_hat: torch.Tensor, t: int, x: torch.Tensor, z: torch.Tensor | None
    ) -> torch.Tensor:
        """One ancestral step from x_t to x_{t-1}; ``z`` is the fresh noise (None at t = 0)."""
        x0_hat = self.sqrt_inv_abar[t] * x - self.sqrt_inv_abar_minus_one[t] * eps_hat
        mean = self.posterior_c0[t] * x0_hat + self.posterior_ct[t] * x
        if t > 0 and z is not None:
            return mean + self.posterior_std[t] * z
        return mean


def per_sample(coefficient: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``coefficient`` [*lead] shaped to broadcast over samples x [*lead, *shape]."""
    return coefficient.reshape(*coefficient.shape, *[1] * (x.dim() - coefficient.dim()))


def noise_prediction_loss(
    model: Denoise, schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """MSE between the model's noise prediction on x_t and the noise that made it."""
    return F.mse_loss(model(schedule.add_noise(x0, eps, t), t), eps)


@torch.no_grad()
def sample(
    model: Denoise,
    schedule: NoiseSchedule,
    n: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    chunk: int = 1000,
    device: str | torch.device = "cpu",
    dim: int | tuple[int, ...] = 2,
) -> torch.Tensor:
    """Ancestral DDPM sampling of n samples of shape ``dim`` (an int: vectors), ``chunk`` at
    a time.

    Chunking keeps the activations in cache (about 1,000 points is much faster on CPU than one
    10,000-point batch) and does not change the result: all noise is drawn up front.
    """
    shape = (dim,) if isinstance(dim, int) else tuple(dim)
    x_all = torch.randn(n, *shape, generator=generator, dtype=dtype).to(device)
    steps = schedule.timesteps - 1
    z_all = torch.randn(steps, n, *shape, generator=generator, dtype=dtype).to(device)
    out = []
    for start in range(0, n, chunk):
        x = x_all[start : start + chunk]
        for t in range(schedule.timesteps - 1, -1, -1):
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=device)
            eps_hat = model(x, tt)
            z = z_all[t - 1, start : start + chunk] if t > 0 else None
            x = schedule.step(eps_hat, t, x, z)
        out.append(x)
    return torch.cat(out)
