"""What a run is measured by: eval losses, sampling time and the kNN KL divergence."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from scipy.spatial import cKDTree

from schedlab.diffusion import Denoise, NoiseSchedule, sample
from schedlab.seeding import generator

# Evaluation draws that must be the same for every run use this fixed seed.
EVAL_SEED = 1_000_003
EVAL_CHUNK = 10_000


@torch.no_grad()
def per_point_loss(
    model: Denoise, schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """Squared error of the noise prediction, averaged over the 2 coordinates, per point."""
    out = []
    for s in range(0, x0.shape[0], EVAL_CHUNK):
        sl = slice(s, s + EVAL_CHUNK)
        pred = model(schedule.add_noise(x0[sl], eps[sl], t[sl]), t[sl])
        out.append(((pred - eps[sl]) ** 2).mean(dim=-1))
    return torch.cat(out)


def reference_eval_loss(
    model: Denoise, schedule: NoiseSchedule, points: torch.Tensor, batch_size: int, seed: int
) -> float:
    """The reference's "eval loss": one pass over the *training* set with the raw model.

    Fresh random t and noise, batches of ``batch_size``, and the mean of the per-batch MSEs (so
    the partial last batch weighs as much as a full one, as in the reference).
    """
    g = generator(seed, "eval")
    n = points.shape[0]
    t = torch.randint(0, schedule.timesteps, (n,), generator=g)
    eps = torch.randn(n, 2, generator=g, dtype=points.dtype)
    losses = per_point_loss(model, schedule, points, t, eps).double()
    batch_means = [losses[s : s + batch_size].mean() for s in range(0, n, batch_size)]
    return float(torch.stack(batch_means).mean())


class HeldoutLoss:
    """The noise-prediction loss on held-out points with t and noise fixed once for all runs."""

    def __init__(self, points: np.ndarray, schedule: NoiseSchedule, dtype: torch.dtype) -> None:
        g = torch.Generator().manual_seed(EVAL_SEED)
        self.x0 = torch.as_tensor(points, dtype=dtype)
        self.t = torch.randint(0, schedule.timesteps, (len(points),), generator=g)
        self.eps = torch.randn(len(points), 2, generator=g, dtype=dtype)
        self.schedule = schedule

    def __call__(self, model: Denoise) -> float:
        return float(
            per_point_loss(model, self.schedule, self.x0, self.t, self.eps).double().mean()
        )


def timed_sample(
    model: Denoise, schedule: NoiseSchedule, n: int, seed: int, dtype: torch.dtype, chunk: int
) -> tuple[np.ndarray, float]:
    """n samples through all T steps, and the seconds it took."""
    g = generator(seed, "sample")
    start = time.perf_counter()
    points = sample(model, schedule, n, g, dtype=dtype, chunk=chunk)
    return points.numpy(), time.perf_counter() - start


class KLReference:
    """kNN estimate of KL(real || generated) in bits against one fixed real set.

    D = [ln(m / (n - 1)) + d (mean ln nu_k - mean ln rho_k)] / ln 2, Chebyshev metric (as the
    reference's NPEET estimator). The real set's rho_k is computed once and reused.
    """

    def __init__(self, real: np.ndarray, k: int = 5) -> None:
        real = np.asarray(real, dtype=np.float64)
        if real.ndim != 2 or len(real) <= k:
            raise ValueError(f"real set must be [n > k={k}, d] points, got shape {real.shape}")
        if not np.isfinite(real).all():
            raise ValueError("real set contains NaN/inf points")
        self.real, self.k = real, k
        # Exact duplicates would give a zero distance and an infinite estimate; distances are
        # floored at a tiny fraction of the data's scale instead.
        self.floor = 1e-12 * max(1.0, float(np.abs(real).max()))
        rho = cKDTree(real).query(real, k=k + 1, p=np.inf, workers=-1)[0][:, k]
        self.mean_log_rho = float(np.log(np.maximum(rho, self.floor)).mean())

    def kl(self, generated: np.ndarray) -> float:
        generated = np.asarray(generated, dtype=np.float64)
        n, d = self.real.shape
        if generated.ndim != 2 or generated.shape[1] != d:
            raise ValueError(f"generated points must have shape [m, {d}], got {generated.shape}")
        bad = int((~np.isfinite(generated).all(axis=1)).sum())
        if bad:
            raise ValueError(f"{bad} of {len(generated)} generated points are NaN/inf")
        m = len(generated)
        if m < self.k:
            raise ValueError(f"need at least k={self.k} generated points, got {m}")
        nu = cKDTree(generated).query(self.real, k=self.k, p=np.inf, workers=-1)[0]
        nu = nu[:, self.k - 1] if self.k > 1 else nu
        mean_log_nu = float(np.log(np.maximum(nu, self.floor)).mean())
        return (math.log(m / (n - 1)) + d * (mean_log_nu - self.mean_log_rho)) / math.log(2)


def kl_divergence(real: np.ndarray, generated: np.ndarray, k: int = 5) -> float:
    """KL(real || generated) in bits by the kNN estimator (see KLReference)."""
    return KLReference(real, k).kl(generated)
