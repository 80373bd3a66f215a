"""Post-hoc EMA: the power-function profiles against independent computations, the
reconstruction of a tracked EMA from its snapshots, and both engines tracking the same ones."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from schedlab.averaging.plan import PosthocPlan, Snapshot
from schedlab.averaging.profiles import (
    STD_MAX,
    beta,
    coefficients,
    gamma_of,
    inner_products,
    snapshot_steps,
    std_of,
)
from schedlab.averaging.reconstruct import averaged_weights
from schedlab.averaging.tracking import PowerEMA
from schedlab.config.settings import TrainSettings
from schedlab.schedules.registry import resolve
from schedlab.training.checkpoint import Checkpoint, CheckpointPolicy, Checkpoints
from schedlab.training.common import Member
from schedlab.training.fleet.shards import train_fleet
from schedlab.training.loop import train_reference


@pytest.mark.parametrize("std", [0.01, 0.05, 0.1, 0.2, 0.3])
def test_the_exponent_has_the_asked_relative_std(std):
    gamma = gamma_of(std)
    # sigma_rel from its definition: the std of the density (g + 1) x^g on [0, 1].
    mean = integrate.quad(lambda x: (gamma + 1) * x**gamma * x, 0, 1)[0]
    second = integrate.quad(lambda x: (gamma + 1) * x**gamma * x * x, 0, 1)[0]
    assert math.sqrt(second - mean**2) == pytest.approx(std, rel=1e-9)
    assert std_of(gamma) == pytest.approx(std, rel=1e-12)


def test_a_length_beyond_the_longest_power_function_ema_is_refused():
    assert abs(STD_MAX - 0.30028) < 1e-5
    with pytest.raises(ValueError, match=r"must be in \(0, 0.3003\].*got 0.31"):
        gamma_of(0.31)


def test_the_uniform_profile_tracks_the_plain_mean_and_beta_is_the_papers():
    std = math.sqrt(1 / 12)  # gamma = 0: every step weighs the same
    assert gamma_of(std) == pytest.approx(0.0, abs=1e-12)
    values = np.random.default_rng(0).normal(size=(50, 3))
    source = torch.zeros(3, dtype=torch.float64)
    power = PowerEMA([source], PosthocPlan((std, 0.1), frozenset()))
    gamma = gamma_of(0.1)
    by_hand = np.zeros(3)
    for t, value in enumerate(values, 1):
        source.copy_(torch.from_numpy(value))
        power.update(t)
        decay = (1 - 1 / t) ** (gamma + 1)  # beta_t of EDM2's power-function EMA
        by_hand = decay * by_hand + (1 - decay) * value
        assert beta(t, gamma) == decay
        np.testing.assert_allclose(power.averages[0][0].numpy(), values[:t].mean(0), rtol=1e-12)
    np.testing.assert_allclose(power.averages[1][0].numpy(), by_hand, rtol=1e-12)


def test_profile_inner_products_equal_the_integral():
    def profile(t, g):
        return lambda x: (g + 1) * x**g / t ** (g + 1) if x <= t else 0.0

    for t_a, g_a, t_b, g_b in [(100, 6.9, 300, 16.9), (300, 16.9, 100, 6.9), (50, 0.0, 50, 2.0)]:
        a, b = profile(t_a, g_a), profile(t_b, g_b)
        want = integrate.quad(lambda x, a=a, b=b: a(x) * b(x), 0, min(t_a, t_b), limit=200)[0]
        assert inner_products(t_a, g_a, t_b, g_b) == pytest.approx(want, rel=1e-8)


def test_snapshot_steps_are_even_and_end_with_training():
    assert snapshot_steps(10_000, 16)[:2] == [625, 1250]
    assert snapshot_steps(10_000, 16)[-1] == 10_000 and len(snapshot_steps(10_000, 16)) == 16
    assert snapshot_steps(3, 16) == [1, 2, 3]


def tracked_run(stds, steps=120):
    """One float64 reference run tracking ``stds``, 4 snapshots each."""
    points = np.random.default_rng(1).normal(size=(256, 2))
    settings = TrainSettings(
        steps=steps, batch_size=64, emb_size=8, hidden_size=16, hidden_layers=1, dtype="float64"
    )
    plan = PosthocPlan.of(list(stds), 4, steps)
    return train_reference(points, resolve("cosine", {}, steps), settings, 0, posthoc=plan)


def test_reconstructing_a_tracked_ema_at_a_snapshot_gives_its_weights():
    result = tracked_run((0.05, 0.1))
    assert sorted({s.step for s in result.snapshots}) == [30, 60, 90, 120]
    for std in (0.05, 0.1):
        for step in (60, 120):
            weights, coef = averaged_weights(result.snapshots, std, step)
            (tracked,) = [s.weights for s in result.snapshots if (s.std, s.step) == (std, step)]
            assert np.abs(weights - tracked).max() <= 1e-6 * np.abs(tracked).max()
            assert coef.sum() == pytest.approx(1.0, abs=1e-12)
            assert all(c == 0 for c, s in zip(coef, result.snapshots, strict=True) if s.step > step)


def test_an_untracked_length_is_approximated_from_the_others():
    result = tracked_run((0.05, 0.08, 0.12), steps=400)
    others = [s for s in result.snapshots if s.std != 0.08]
    weights, coef = averaged_weights(others, 0.08)
    (tracked,) = [s.weights for s in result.snapshots if (s.std, s.step) == (0.08, 400)]
    (short,) = [s.weights for s in result.snapshots if (s.std, s.step) == (0.05, 400)]
    error = np.abs(weights - tracked).max()
    assert error < 0.25 * np.abs(short - tracked).max()  # 6.5x closer than the nearest tracked
    assert coef.sum() == pytest.approx(1.0, abs=1e-12)


def test_reconstruction_needs_a_snapshot_by_then():
    with pytest.raises(ValueError, match="no snapshot was taken by step 10; the first is at"):
        averaged_weights([Snapshot(0.1, 30, np.zeros(3))], 0.1, 10)
    with pytest.raises(ValueError, match="stored no post-hoc EMA snapshots"):
        averaged_weights([], 0.1)


def test_a_single_profile_solve_is_the_identity():
    steps, gammas = np.array([10.0, 20.0]), np.array([gamma_of(0.1)] * 2)
    np.testing.assert_allclose(coefficients(steps, gammas, 20, gamma_of(0.1)), [0, 1], atol=1e-9)


def fleet_members(steps):
    points = np.random.default_rng(0).normal(size=(300, 2))
    schedules = [resolve("cosine", {}, steps), resolve("constant", {}, steps)]
    lrs = [1e-3, 1e4]  # the second diverges: it keeps no snapshot
    return [
        Member(points, s, seed, lr) for seed, (s, lr) in enumerate(zip(schedules, lrs, strict=True))
    ]


SETTINGS = TrainSettings(
    steps=40, batch_size=64, emb_size=8, hidden_size=16, hidden_layers=1, dtype="float64"
)
PLAN = PosthocPlan.of([0.05, 0.1], 4, SETTINGS.steps)


def test_fleet_and_loop_track_identical_snapshots_in_float64():
    members = fleet_members(SETTINGS.steps)
    fleet = train_fleet(members, SETTINGS, posthoc=PLAN)
    loop = train_reference(
        members[0].points,
        members[0].schedule,
        SETTINGS.model_copy(update={"lr": members[0].lr}),
        0,
        posthoc=PLAN,
    )
    assert [(s.std, s.step) for s in fleet[0].snapshots] == [
        (std, step) for step in (10, 20, 30, 40) for std in (0.05, 0.1)
    ]
    assert [(s.std, s.step) for s in loop.snapshots] == [
        (s.std, s.step) for s in fleet[0].snapshots
    ]
    for a, b in zip(fleet[0].snapshots, loop.snapshots, strict=True):
        np.testing.assert_allclose(a.weights, b.weights, rtol=0, atol=1e-12)
    assert fleet[1].diverged_at is not None and fleet[1].snapshots == []


def test_a_resumed_fleet_keeps_its_snapshots_bitwise():
    members = fleet_members(SETTINGS.steps)
    saved: dict[int, dict[int, Checkpoint]] = {}

    def save(k, checkpoint):
        saved.setdefault(checkpoint.step, {})[k] = checkpoint

    straight = train_fleet(
        members,
        SETTINGS,
        posthoc=PLAN,
        checkpoints=Checkpoints([None, None], save, CheckpointPolicy(every_steps=15)),
    )
    # Between snapshots 10 and 20: each checkpoint holds those taken so far.
    at = [saved[15][k] for k in range(2)]
    assert [[s.step for s in c.snapshots] for c in at] == [[10, 10], []]
    restored = [Checkpoint.from_bytes(c.to_bytes()) for c in at]  # the bytes hold no snapshots
    assert all(c.snapshots == () and "posthoc_1" in c.rows for c in restored)
    resume = [
        dataclasses.replace(r, snapshots=c.snapshots) for r, c in zip(restored, at, strict=True)
    ]
    resumed = train_fleet(
        members[::-1],  # another position in the fleet
        SETTINGS,
        posthoc=PLAN,
        checkpoints=Checkpoints(resume[::-1], lambda k, c: None, CheckpointPolicy()),
        shards=2,
    )[::-1]
    for a, b in zip(straight[0].snapshots, resumed[0].snapshots, strict=True):
        assert (a.std, a.step) == (b.std, b.step) and np.array_equal(a.weights, b.weights)
    assert len(resumed[0].snapshots) == 8
