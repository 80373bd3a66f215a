"""Drawing a run's samples, timed."""

from __future__ import annotations

import time

import numpy as np
import torch

from schedlab.model.diffusion import Denoise, NoiseSchedule, sample
from schedlab.training.seeding import generator


def timed_sample(
    model: Denoise,
    schedule: NoiseSchedule,
    n: int,
    seed: int,
    dtype: torch.dtype,
    chunk: int,
    dim: int = 2,
) -> tuple[np.ndarray, float]:
    """n samples of ``dim`` coordinates through all T steps, and the seconds it took."""
    g = generator(seed, "sample")
    start = time.perf_counter()
    points = sample(model, schedule, n, g, dtype=dtype, chunk=chunk, dim=dim)
    return points.numpy(), time.perf_counter() - start
