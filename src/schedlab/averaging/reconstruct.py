"""The weights of a post-hoc EMA of any length, formed from a run's stored snapshots."""

from __future__ import annotations

import numpy as np

from schedlab.averaging.plan import Snapshot
from schedlab.averaging.profiles import coefficients, gamma_of


def averaged_weights(
    snapshots: list[Snapshot], std: float, step: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(weights, coefficients): the EMA of relative std ``std`` after ``step`` steps (default:
    the last snapshot's), as the least-squares combination of the snapshots taken by then;
    the coefficients follow ``snapshots`` (0 for those after ``step``) and sum to 1."""
    if not snapshots:
        raise ValueError("the run stored no post-hoc EMA snapshots")
    end = max(s.step for s in snapshots) if step is None else step
    used = [i for i, s in enumerate(snapshots) if s.step <= end]
    if not used:
        first = min(s.step for s in snapshots)
        raise ValueError(f"no snapshot was taken by step {end}; the first is at step {first}")
    solved = coefficients(
        np.array([snapshots[i].step for i in used]),
        np.array([gamma_of(snapshots[i].std) for i in used]),
        end,
        gamma_of(std),
    )
    weights = np.zeros(snapshots[0].weights.shape, dtype=np.float64)
    for i, c in zip(used, solved, strict=True):
        weights += c * snapshots[i].weights.astype(np.float64)
    full = np.zeros(len(snapshots))
    full[used] = solved
    return weights.astype(snapshots[0].weights.dtype), full
