"""Noise-prediction losses a run is measured by: the reference eval loss, held-out losses."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from schedlab.measure.shards import in_shards
from schedlab.model.diffusion import Denoise, NoiseSchedule
from schedlab.training.fleet.autodiff import FleetModel, fleet_of
from schedlab.training.seeding import generator

# Evaluation draws that must be the same for every run use this fixed seed.
EVAL_SEED = 1_000_003
EVAL_CHUNK = 10_000


@torch.no_grad()
def per_point_loss(
    model: Denoise, schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """Squared error of the noise prediction, averaged over each sample's values, per sample."""
    out = []
    for s in range(0, x0.shape[0], EVAL_CHUNK):
        sl = slice(s, s + EVAL_CHUNK)
        pred = model(schedule.add_noise(x0[sl], eps[sl], t[sl]), t[sl])
        out.append(((pred - eps[sl]) ** 2).flatten(1).mean(dim=-1))
    return torch.cat(out)


# Points each member denoises at once when the reference eval loss is measured: a fixed size,
# so a run's value never depends on how many runs were measured with it.
FLEET_CHUNK = 2048


def reference_eval_losses(
    models: list[nn.Module],
    points: list[torch.Tensor],
    seeds: list[int],
    schedule: NoiseSchedule,
    batch_size: int,
) -> list[float]:
    """The reference's "eval loss" of each model: one pass over its *training* set ``points``
    with its raw weights.

    Fresh random t and noise per run (its ``generator(seed, "eval")`` stream), batches of
    ``batch_size``, and the mean of the per-batch MSEs (so the partial last batch weighs as
    much as a full one, as in the reference). The K models' forward passes are one batched
    computation (``fleet_of``, in single-threaded shards): a run's value is bitwise the
    same measured alone or among K.
    """

    @torch.no_grad()
    def measure(part: range) -> list[float]:
        fleet = fleet_of([models[i] for i in part])
        x0 = torch.stack([points[i] for i in part])  # [k, n, *s]
        draws = [eval_draws(points[i], seeds[i], schedule) for i in part]
        t = torch.stack([d[0] for d in draws])  # [k, n]
        eps = torch.stack([d[1] for d in draws])  # [k, n, *s]
        values = []
        for losses in fleet_point_losses(fleet, schedule, x0, t, eps).double():
            batch_means = [losses[s : s + batch_size].mean() for s in range(0, n, batch_size)]
            values.append(float(torch.stack(batch_means).mean()))
        return values

    n = points[0].shape[0]
    return in_shards(len(models), measure)


def eval_draws(
    points: torch.Tensor, seed: int, schedule: NoiseSchedule
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference eval loss's timesteps [n] and noise [n, *s] for the run of ``seed``."""
    g = generator(seed, "eval")
    t = torch.randint(0, schedule.timesteps, (points.shape[0],), generator=g)
    return t, torch.randn(points.shape, generator=g, dtype=points.dtype)


def fleet_point_losses(
    fleet: FleetModel,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
) -> torch.Tensor:
    """[K, n]: each member's squared noise-prediction error, averaged over each sample's
    values, on its own samples x0 [K, n, *s] at timesteps t [K, n] with noise eps [K, n, *s]."""
    out = []
    for lo in range(0, x0.shape[1], FLEET_CHUNK):
        part = slice(lo, lo + FLEET_CHUNK)
        xt = schedule.add_noise(x0[:, part], eps[:, part], t[:, part])
        pred = fleet.predict(xt, t[:, part], schedule.timesteps)
        out.append(((pred - eps[:, part]) ** 2).flatten(2).mean(dim=-1))
    return torch.cat(out, dim=1)


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
