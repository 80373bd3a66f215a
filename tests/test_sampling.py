"""Sampling K runs as one batched computation: the reference sampler's samples, per run."""

import numpy as np
import torch

from schedlab.measure.sampling import timed_samples
from schedlab.model.denoiser import Denoiser
from schedlab.model.diffusion import NoiseSchedule, sample
from schedlab.training.seeding import generator

T = 40


def models(count: int, dtype: torch.dtype, dim: int = 2) -> list[Denoiser]:
    out = []
    for k in range(count):
        torch.manual_seed(k)
        out.append(Denoiser(16, 32, 2, dim).to(dtype))
    return out


def test_fleet_samples_equal_the_reference_sampler_run_by_run_in_float64():
    schedule = NoiseSchedule(T, dtype=torch.float64)
    nets, seeds = models(3, torch.float64), [5, 0, 11]
    points, seconds = timed_samples(nets, seeds, schedule, 250, torch.float64, chunk=100)
    assert seconds > 0 and len(points) == 3
    for net, seed, drawn in zip(nets, seeds, points, strict=True):
        expected = sample(
            net, schedule, 250, generator(seed, "sample"), dtype=torch.float64, chunk=100
        )
        assert drawn.shape == (250, 2)
        np.testing.assert_allclose(drawn, expected.numpy(), rtol=1e-12, atol=1e-12)


def test_a_runs_samples_do_not_depend_on_its_fleet_in_float32():
    schedule = NoiseSchedule(T)
    nets = models(4, torch.float32, dim=3)
    alone = timed_samples(nets[2:3], [7], schedule, 300, torch.float32, chunk=128)[0][0]
    for fleet, seeds, position in (
        (nets, [1, 2, 7, 3], 2),
        (nets[1:3], [2, 7], 1),
        ([nets[2], *nets[:2]], [7, 1, 2], 0),
    ):
        drawn = timed_samples(fleet, seeds, schedule, 300, torch.float32, chunk=128)[0]
        assert np.array_equal(drawn[position], alone)  # bitwise, at any position and size
    # and each run draws its own noise: the same model with another seed differs
    other = timed_samples(nets[2:3], [8], schedule, 300, torch.float32, chunk=128)[0][0]
    assert not np.allclose(other, alone)
