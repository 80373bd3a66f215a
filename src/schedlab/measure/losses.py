"""Noise-prediction losses a run is measured by: the reference eval loss, held-out losses."""

from __future__ import annotations

import numpy as np
import torch

from schedlab.model.diffusion import Denoise, NoiseSchedule
from schedlab.training.seeding import generator

# Evaluation draws that must be the same for every run use this fixed seed.
EVAL_SEED = 1_000_003
EVAL_CHUNK = 10_000


@torch.no_grad()
def per_point_loss(
    model: Denoise, schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """Squared error of the noise prediction, averaged over the d coordinates, per point."""
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
    eps = torch.randn(points.shape, generator=g, dtype=points.dtype)
    losses = per_point_loss(model, schedule, points, t, eps).double()
    batch_means = [losses[s : s + batch_size].mean() for s in range(0, n, batch_size)]
    return float(torch.stack(batch_means).mean())


class HeldoutLoss:
    """The noise-prediction loss on held-out points with t and noise fixed once for all runs."""

    def __init__(self, points: np.ndarray, schedule: NoiseSchedule, dtype: torch.dtype) -> None:
        g = torch.Generator().manual_seed(EVAL_SEED)
        self.x0 = torch.as_tensor(points, dtype=dtype)
        self.t = torch.randint(0, schedule.timesteps, (len(points),), generator=g)
        self.eps = torch.randn(self.x0.shape, generator=g, dtype=dtype)
        self.schedule = schedule

    def __call__(self, model: Denoise) -> float:
        return float(
            per_point_loss(model, self.schedule, self.x0, self.t, self.eps).double().mean()
        )
