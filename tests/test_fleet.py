"""The fleet's hand-written forward and backward against autograd on the reference Denoiser."""

import pytest
import torch

from schedlab.model.denoiser import Denoiser
from schedlab.model.diffusion import NoiseSchedule, noise_prediction_loss
from schedlab.training.fleet.model import FleetDenoiser


def models(sizes, k, dtype=torch.float64):
    torch.manual_seed(0)
    return [Denoiser(*sizes).to(dtype) for _ in range(k)]


@pytest.mark.parametrize("sizes", [(8, 16, 2), (16, 32, 0), (128, 256, 3)])
def test_losses_and_gradients_equal_autograd_member_by_member(sizes):
    members = models(sizes, 3)
    fleet = FleetDenoiser(members)
    noise = NoiseSchedule(dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 37, 2, generator=generator, dtype=torch.float64)
    eps = torch.randn(3, 37, 2, generator=generator, dtype=torch.float64)
    t = torch.randint(0, 100, (3, 37), generator=generator)
    losses = fleet.losses_and_gradients(x0, t, eps, noise.sqrt_abar, noise.sqrt_one_minus_abar)
    for k, model in enumerate(members):
        loss = noise_prediction_loss(model, noise, x0[k], t[k], eps[k])
        loss.backward()
        torch.testing.assert_close(losses[k], loss.detach(), rtol=1e-12, atol=0)
        # Pack the autograd gradients in the fleet layout (whose mapping the losses just checked).
        grads = Denoiser(*sizes).double()
        for target, p in zip(grads.parameters(), model.parameters(), strict=True):
            target.data.copy_(p.grad)
        packed = FleetDenoiser([grads] * 3)
        torch.testing.assert_close(fleet.grad[k], packed.weights[k], rtol=1e-10, atol=1e-13)


def test_members_round_trip_exactly():
    members = models((8, 16, 2), 3, torch.float32)
    fleet = FleetDenoiser(members)
    for k, model in enumerate(members):
        copy = fleet.member(k, Denoiser(8, 16, 2))
        for a, b in zip(copy.parameters(), model.parameters(), strict=True):
            assert torch.equal(a, b)


def test_a_smaller_batch_gets_its_own_buffers_and_the_same_math():
    members = models((8, 16, 1), 2)
    fleet = FleetDenoiser(members)
    noise = NoiseSchedule(dtype=torch.float64)
    x0, eps = torch.randn(2, 10, 2, dtype=torch.float64), torch.randn(2, 10, 2, dtype=torch.float64)
    t = torch.randint(0, 100, (2, 10))
    full = fleet.losses_and_gradients(x0, t, eps, noise.sqrt_abar, noise.sqrt_one_minus_abar)
    full = full.clone()
    part = fleet.losses_and_gradients(
        x0[:, :4], t[:, :4], eps[:, :4], noise.sqrt_abar, noise.sqrt_one_minus_abar
    )
    for k, model in enumerate(members):
        want = noise_prediction_loss(model, noise, x0[k, :4], t[k, :4], eps[k, :4])
        torch.testing.assert_close(part[k], want.detach(), rtol=1e-12, atol=0)
        want = noise_prediction_loss(model, noise, x0[k], t[k], eps[k])
        torch.testing.assert_close(full[k], want.detach(), rtol=1e-12, atol=0)


def test_an_empty_fleet_is_refused():
    with pytest.raises(ValueError, match="a fleet needs at least one model"):
        FleetDenoiser([])
