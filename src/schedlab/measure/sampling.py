"""Drawing runs' samples, timed: K runs as one batched computation, the fleet's forward.

Member k draws its noise exactly as ``schedlab.model.diffusion.sample`` does for one run (all of
it up front from ``generator(seed, "sample")``) and denoises it through all T steps with its own
EMA weights; the K members' forward passes are one fleet (``fleet_of``: the MLP's batched
GEMMs, or any module's autograd fleet), in single-threaded shards (``measure.shards``): a run's
samples are bitwise the same drawn alone (``schedlab measure``, the loop engine) or among 20.
In float64 they equal the reference sampler to round-off.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from schedlab.measure.shards import in_shards
from schedlab.model.diffusion import NoiseSchedule
from schedlab.training.fleet.autodiff import fleet_of
from schedlab.training.seeding import generator

# Up-front noise of the members sampled at once is kept under this many bytes: a 64-D run's
# noise for 10,000 samples is 250 MB, a 2-D run's 8 MB.
NOISE_BUDGET_BYTES = 1 << 30


def timed_samples(
    models: list[nn.Module],
    seeds: list[int],
    schedule: NoiseSchedule,
    n: int,
    dtype: torch.dtype,
    chunk: int,
    shape: tuple[int, ...] | None = None,
) -> tuple[list[np.ndarray], float]:
    """Each model's n samples of ``shape`` (default: the mlp's [in_dim]) through all T steps
    (model k with seed k's sampling stream), and the seconds drawing them took per model (the
    wall time / K)."""
    shape = shape or (int(models[0].in_dim),)
    size = math.prod(shape)
    per_member = schedule.timesteps * n * size * torch.empty((), dtype=dtype).element_size()
    at_once = max(1, NOISE_BUDGET_BYTES // per_member)

    @torch.no_grad()
    def fleet_sample(part: range) -> torch.Tensor:
        """[k, n, *shape]: ancestral DDPM sampling of the models in ``part`` at once, ``chunk``
        samples at a time, each from its own noise."""
        fleet = fleet_of([models[i] for i in part])
        steps = schedule.timesteps
        x_all, z_all = [], []
        for i in part:
            g = generator(seeds[i], "sample")
            x_all.append(torch.randn(n, *shape, generator=g, dtype=dtype))
            z_all.append(torch.randn(steps - 1, n, *shape, generator=g, dtype=dtype))
        x0, z0 = torch.stack(x_all), torch.stack(z_all)  # [k, n, *s], [k, T - 1, n, *s]
        out = []
        for lo in range(0, n, chunk):
            x = x0[:, lo : lo + chunk]  # [k, c, *s]
            for t in range(steps - 1, -1, -1):
                eps_hat = fleet.predict(x, torch.full(x.shape[:2], t, dtype=torch.long), steps)
                z = z0[:, t - 1, lo : lo + chunk] if t > 0 else None
                x = schedule.step(eps_hat, t, x, z)
            out.append(x)
        return torch.cat(out, dim=1)

    start = time.perf_counter()
    points = in_shards(len(models), lambda part: list(fleet_sample(part).numpy()), at_once)
    return points, (time.perf_counter() - start) / len(models)
