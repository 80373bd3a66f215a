"""bf16-mixed precision: bfloat16 matmuls over float32 weights, AdamW and EMA; still a run's
own numbers whatever its fleet position, and resumable bitwise."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from schedlab.config.settings import TrainSettings
from schedlab.schedules.registry import resolve
from schedlab.training.checkpoint import Checkpoint, CheckpointPolicy, Checkpoints
from schedlab.training.common import Member
from schedlab.training.fleet.shards import train_fleet
from schedlab.training.loop import train_reference

STEPS = 30
MIXED = TrainSettings(steps=STEPS, batch_size=128, precision="bf16-mixed")
POINTS = np.random.default_rng(0).normal(size=(600, 2)).astype(np.float32)
MEMBERS = [
    Member(POINTS, resolve(name, {}, STEPS), seed, 1e-3)
    for seed, name in enumerate(["cosine", "constant", "linear"])
]


def same(a, b) -> bool:
    pairs = zip(a.model.parameters(), b.model.parameters(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs) and np.array_equal(a.losses, b.losses)


def test_mixed_precision_is_position_independent_and_resumes_bitwise():
    alone = [train_fleet([m], MIXED)[0] for m in MEMBERS]
    together = train_fleet(MEMBERS, MIXED, shards=1)
    reversed_ = train_fleet(MEMBERS[::-1], MIXED, shards=1)[::-1]
    assert all(
        same(a, b) and same(a, c) for a, b, c in zip(alone, together, reversed_, strict=True)
    )
    saved: dict[int, Checkpoint] = {}

    def keep(k: int, checkpoint: Checkpoint) -> None:
        if checkpoint.step == 14:
            saved[k] = checkpoint

    policy = CheckpointPolicy(every_steps=7)
    train_fleet(MEMBERS, MIXED, checkpoints=Checkpoints([None] * 3, keep, policy))
    resumed = train_fleet(
        MEMBERS, MIXED, checkpoints=Checkpoints([saved[k] for k in range(3)], lambda k, c: None)
    )
    assert all(same(a, b) for a, b in zip(together, resumed, strict=True))


def test_mixed_precision_keeps_float32_weights_and_stays_near_float32_training():
    full = train_fleet(MEMBERS, TrainSettings(steps=STEPS, batch_size=128), shards=1)
    mixed = train_fleet(MEMBERS, MIXED, shards=1)
    for a, b in zip(full, mixed, strict=True):
        assert b.model.input.weight.dtype == torch.float32
        assert not np.array_equal(a.losses, b.losses)  # the matmuls really ran in bfloat16
        np.testing.assert_allclose(b.losses, a.losses, rtol=0.05)


def test_the_reference_loop_trains_mixed_under_autocast():
    settings = MIXED.model_copy(update={"lr": 1e-3})
    mixed = train_reference(POINTS, MEMBERS[0].schedule, settings, 0)
    full = train_reference(
        POINTS, MEMBERS[0].schedule, settings.model_copy(update={"precision": None}), 0
    )
    assert mixed.model.input.weight.dtype == torch.float32
    assert not np.array_equal(mixed.losses, full.losses)
    np.testing.assert_allclose(mixed.losses, full.losses, rtol=0.05)


def test_mixed_precision_needs_float32_weights():
    with pytest.raises(ValidationError, match="keeps float32 weights: dtype must be float32"):
        TrainSettings(precision="bf16-mixed", dtype="float64")
    with pytest.raises(ValidationError, match="precision"):
        TrainSettings(precision="fp8")
