"""The fleet engine against the reference loop, the oracle."""

import threading

import numpy as np
import pytest
import torch

from schedlab import data
from schedlab.config.settings import TrainSettings
from schedlab.schedules import registry as schedules
from schedlab.training.common import Member
from schedlab.training.fleet.shards import train_fleet
from schedlab.training.loop import train_reference

CASES = [
    ("moons", "cosine", {}, 0, 3e-4),
    ("dino", "step", {"step_size": 50, "gamma": 0.5, "warmup_steps": 20}, 1, 1e-3),
    ("line", "plateau", {"window": 5, "every": 5, "patience": 10, "factor": 0.5}, 7, 3e-4),
]


def members_and_reference(settings):
    members, reference = [], []
    for dataset, name, params, seed, lr in CASES:
        points = data.load(dataset, 1000)
        spec = schedules.resolve(name, params, settings.steps)
        members.append(Member(points, spec, seed, lr))
        run_settings = settings.model_copy(update={"lr": lr})
        reference.append(train_reference(points, spec, run_settings, seed))
    return members, reference


@pytest.mark.parametrize("shards", [1, 3])
def test_float64_fleet_equals_the_reference_loop(shards):
    settings = TrainSettings(steps=200, batch_size=128, dtype="float64")
    members, reference = members_and_reference(settings)
    fleet = train_fleet(members, settings, shards=shards)
    for got, want in zip(fleet, reference, strict=True):
        assert got.diverged_at is None
        np.testing.assert_allclose(got.losses, want.losses, rtol=0, atol=1e-9)
        np.testing.assert_allclose(got.lrs, want.lrs, rtol=1e-12, atol=0)
        for a, b in zip(got.model.parameters(), want.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
        for a, b in zip(got.ema_model.parameters(), want.ema_model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    # The plateau member dropped its LR by itself, on its own loss.
    assert fleet[2].lrs[-1] < fleet[2].lrs[0]


def test_float32_fleet_agrees_within_round_off():
    settings = TrainSettings(steps=100, batch_size=128, emb_size=32, hidden_size=64)
    members, reference = members_and_reference(settings)
    for got, want in zip(train_fleet(members, settings), reference, strict=True):
        np.testing.assert_allclose(got.losses, want.losses, rtol=1e-3, atol=1e-4)


def test_a_diverging_member_is_frozen_and_the_others_go_on():
    settings = TrainSettings(steps=60, batch_size=64, emb_size=16, hidden_size=32)
    points = data.load("moons", 500)
    members = [
        Member(points, schedules.resolve("constant"), 0, 3e-4),
        Member(points, schedules.resolve("constant"), 1, 1e4),
        Member(points, schedules.resolve("cosine"), 2, 3e-4),
    ]
    results = train_fleet(members, settings)
    assert results[1].diverged_at is not None
    assert len(results[1].losses) == results[1].diverged_at + 1
    alone = train_reference(points, schedules.resolve("cosine"), settings, 2)
    np.testing.assert_allclose(results[2].losses, alone.losses, rtol=1e-4, atol=1e-5)
    assert results[0].diverged_at is None and np.all(np.isfinite(results[0].losses))


def test_a_diverging_plateau_member_keeps_its_last_finite_weights():
    """Its schedule is stepped on the host and stops with it; its frozen LR is 0, not NaN."""
    settings = TrainSettings(steps=60, batch_size=64, emb_size=16, hidden_size=32)
    points = data.load("moons", 500)
    plateau = schedules.resolve("plateau", {"window": 1, "every": 1, "patience": 2, "factor": 0.5})
    members = [Member(points, plateau, 0, 1e4), Member(points, plateau, 1, 3e-4)]
    diverged, healthy = train_fleet(members, settings, shards=1)
    assert diverged.diverged_at is not None
    assert len(diverged.lrs) == diverged.diverged_at + 1 and np.all(np.isfinite(diverged.lrs))
    for param in (*diverged.model.parameters(), *diverged.ema_model.parameters()):
        assert torch.isfinite(param).all()
    alone = train_reference(points, plateau, settings, 1)
    np.testing.assert_allclose(healthy.losses, alone.losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(healthy.lrs, alone.lrs, rtol=1e-12)
    assert healthy.lrs[-1] < healthy.lrs[0]  # its plateau acted, on the host, on its own loss


def test_a_failing_shard_stops_the_fleet_with_its_own_error():
    settings = TrainSettings(steps=400, batch_size=32, emb_size=8, hidden_size=16)
    points = data.load("moons", 300)
    watching = schedules.resolve("plateau", {"watch": "heldout", "every": 20}, settings.steps)
    members = [Member(points, schedules.resolve("constant"), s, 3e-4) for s in range(3)]
    members.append(Member(points, watching, 3, 3e-4))

    def heldout_loss(k, model):
        raise ValueError(f"no held-out loss for member {k}")

    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match="no held-out loss for member 3"):
        train_fleet(members, settings, heldout_loss=heldout_loss, shards=2)
    assert torch.get_num_threads() == threads


def test_an_interrupt_stays_an_interrupt_whatever_another_shard_raised():
    """Ctrl-C reaches the first shard's thread; a shard that broke meanwhile (say, importing a
    module the interrupt left half-initialized) must not turn it into a failed fleet."""
    settings = TrainSettings(steps=100, batch_size=32, emb_size=8, hidden_size=16, curve_every=50)
    points = data.load("moons", 300)
    members = [Member(points, schedules.resolve("constant"), s, 3e-4) for s in range(4)]
    measuring, broke = threading.Event(), threading.Event()

    def heldout_loss(k, model):
        if k >= 2:  # the second shard breaks while the first is inside a measurement
            measuring.wait(30)
            broke.set()
            raise AttributeError("module 'sympy' has no attribute 'printing'")
        measuring.set()
        broke.wait(30)
        raise KeyboardInterrupt  # Ctrl-C lands in the first shard's thread

    with pytest.raises(KeyboardInterrupt):
        train_fleet(members, settings, heldout_loss=heldout_loss, shards=2)


def test_sharded_training_is_deterministic():
    members, settings = tiny_fleet()
    first, second = (train_fleet(members * 2, settings, shards=2) for _ in range(2))
    # The same member in either shard trains the same way, and so does a second fleet.
    np.testing.assert_array_equal(first[0].losses, first[2].losses)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.losses, b.losses)
        for p, q in zip(a.ema_model.parameters(), b.ema_model.parameters(), strict=True):
            assert torch.equal(p, q)


def test_training_leaves_the_thread_settings_as_it_found_them():
    members, settings = tiny_fleet()
    threads = torch.get_num_threads()
    train_fleet(members, settings, shards=2)
    assert torch.get_num_threads() == threads
    # Denormals are flushed only while the fleet trains.
    assert (torch.tensor([1e-39]) * 1.0).item() > 0


def test_schedule_free_is_refused_by_the_fleet():
    settings = TrainSettings(steps=5)
    member = Member(data.load("moons", 100), schedules.resolve("schedule_free"), 0, 3e-4)
    with pytest.raises(ValueError, match="schedule_free runs train in the reference loop"):
        train_fleet([member], settings)


def tiny_fleet():
    settings = TrainSettings(steps=12, batch_size=32, emb_size=8, hidden_size=16, hidden_layers=1)
    points = data.load("moons", 200)
    members = [
        Member(points, schedules.resolve(name), seed, 3e-4)
        for seed, name in enumerate(["cosine", "step"])
    ]
    return members, settings


def test_a_failing_compile_falls_back_to_eager(monkeypatch):
    members, settings = tiny_fleet()
    eager = train_fleet(members, settings, use_compile=False)

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("simulated Inductor crash\ndetails")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(
        RuntimeWarning,
        match="torch.compile failed, the fleet trains eagerly: "
        "RuntimeError: simulated Inductor crash",
    ):
        fallback = train_fleet(members, settings, use_compile=True)
    for a, b in zip(fallback, eager, strict=True):
        np.testing.assert_array_equal(a.losses, b.losses)


@pytest.mark.slow
def test_compiled_fleet_agrees_with_eager():
    members, settings = tiny_fleet()
    eager = train_fleet(members, settings, use_compile=False)
    compiled = train_fleet(members, settings, use_compile=True)
    for a, b in zip(compiled, eager, strict=True):
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-4, atol=1e-5)
