"""A run's numbers do not depend on the fleet it trains in: bitwise, in float32.

Before the fleet padded every member to 64-byte boundaries, the same run gave different
weights at odd and even positions (the GEMM kernels treat misaligned matrices differently).
"""

import numpy as np
import pytest
import torch

from schedlab import data
from schedlab.config.settings import TrainSettings
from schedlab.schedules.registry import resolve
from schedlab.training.common import Member
from schedlab.training.fleet.model import ALIGN_BYTES, FleetDenoiser, stacked
from schedlab.training.fleet.shards import train_fleet

# Hidden 64 and embedding 32 give rows of 18,818 floats: 8 bytes past a multiple of 64, the
# misalignment the default model has too. An odd batch makes every buffer misaligned as well.
SETTINGS = TrainSettings(steps=30, batch_size=37, emb_size=32, hidden_size=64, hidden_layers=2)


def the_run():
    return Member(data.load("moons", 500), resolve("plateau", {"every": 5, "window": 5}), 3, 1e-3)


def others(count, n=500):
    names = ["cosine", "step", "exponential", "constant"]
    points = data.load("dino", n)
    return [Member(points, resolve(names[i % 4]), 10 + i, 3e-4 * (i + 1)) for i in range(count)]


def fingerprint(result):
    weights = [p.detach().clone() for p in result.model.parameters()]
    ema = [p.detach().clone() for p in result.ema_model.parameters()]
    return result.losses, result.lrs, weights, ema


def assert_bitwise_equal(got, want):
    np.testing.assert_array_equal(got[0], want[0])  # losses
    np.testing.assert_array_equal(got[1], want[1])  # LRs
    for a, b in zip(got[2] + got[3], want[2] + want[3], strict=True):
        assert torch.equal(a, b)


def test_the_same_run_at_every_position_and_fleet_size_is_bitwise_the_same():
    alone = fingerprint(train_fleet([the_run()], SETTINGS)[0])
    filler = others(15)
    for size in (3, 16):
        for position in range(min(size, 9)):
            fleet = [*filler[:position], the_run(), *filler[position : size - 1]]
            assert_bitwise_equal(fingerprint(train_fleet(fleet, SETTINGS)[position]), alone)


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_shards_and_thread_counts_change_no_bit(shards):
    alone = fingerprint(train_fleet([the_run()], SETTINGS)[0])
    fleet = [*others(4), the_run()]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2 if shards == 1 else 1)
        got = train_fleet(fleet, SETTINGS, shards=shards)[4]
    finally:
        torch.set_num_threads(threads)
    assert_bitwise_equal(fingerprint(got), alone)


def test_the_reference_model_size_is_position_independent_too():
    settings = TrainSettings(steps=20)  # 296,450 weights per run
    run = Member(data.load("moons", 2000), resolve("cosine"), 0, 3e-4)
    alone = fingerprint(train_fleet([run], settings)[0])
    for position in (1, 2, 3):
        fleet = [*others(position, 2000), run]
        assert_bitwise_equal(fingerprint(train_fleet(fleet, settings, shards=1)[position]), alone)


def test_every_member_slab_starts_on_a_cache_line():
    for dtype in (torch.float32, torch.float64):
        buffer = stacked(5, (37, 65), dtype=dtype, device="cpu")
        assert all(buffer[k].data_ptr() % ALIGN_BYTES == 0 for k in range(5))
    from schedlab.training.common import build_model

    fleet = FleetDenoiser([build_model(SETTINGS, seed) for seed in range(3)])
    for layer in fleet.layers + fleet.grad_layers:
        assert all(layer[k].data_ptr() % ALIGN_BYTES == 0 for k in range(3))
