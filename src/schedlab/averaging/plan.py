"""What a run tracks for post-hoc EMA, and what it keeps of it (no torch: the store reads it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schedlab.averaging.profiles import snapshot_steps


@dataclass(frozen=True)
class Snapshot:
    std: float  # the tracked profile's relative standard deviation
    step: int  # optimizer steps done when it was taken
    weights: np.ndarray  # the averaged weights, flat


@dataclass(frozen=True)
class PosthocPlan:
    """What a run tracks: its profiles' relative stds and the steps it stores them after."""

    stds: tuple[float, ...]
    steps: frozenset[int]

    @staticmethod
    def of(stds: list[float], snapshots: int, steps: int) -> PosthocPlan:
        return PosthocPlan(tuple(stds), frozenset(snapshot_steps(steps, snapshots)))
