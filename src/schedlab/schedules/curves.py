"""The LR a schedule gives at each step, for plots and tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from schedlab.schedules.driver import LRDriver
from schedlab.schedules.registry import (
    WARMUP_PARAMS,
    ScheduleSpec,
    check_base_lr,
    resolve,
)


def lr_curve(
    name: str,
    steps: int,
    base_lr: float = 3e-4,
    metrics: Sequence[float] | None = None,
    **params: Any,
) -> np.ndarray:
    """The LR the optimizer uses at each step 0..steps-1, as a float64 numpy array.

    For ``plateau``, ``metrics`` is the watched signal: one training loss per step (watch=train)
    or one held-out loss per look (watch=heldout). Without it the loss never improves.
    """
    if steps <= 0:
        raise ValueError(f"steps must be a positive int, got {steps}")
    check_base_lr(base_lr)
    return spec_lr_curve(resolve(name, params, steps), steps, base_lr, metrics)


def spec_lr_curve(
    spec: ScheduleSpec, steps: int, base_lr: float, metrics: Sequence[float] | None = None
) -> np.ndarray:
    """``lr_curve`` of a resolved schedule: the LR at each step 0..steps-1 (float64)."""
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=base_lr)
    driver = LRDriver(optimizer, spec, steps)
    values: Iterator[float] = iter(metrics) if metrics is not None else _constant_metric()
    heldout = (lambda: next(values)) if driver.watches_heldout else None
    out = np.empty(steps, dtype=np.float64)
    for i in range(steps):
        out[i] = driver.lr
        optimizer.step()
        driver.step(0.0 if heldout else next(values), heldout)
    return out


def check_user_schedule(spec: ScheduleSpec, steps: int, whole_run: bool = False) -> None:
    """Call a user-defined schedule's function on a throwaway optimizer (and, with
    ``whole_run``, step it through every step), so that a bad keyword, a wrong return type or a
    function that raises is one ValueError naming the schedule before anything trains.
    schedlab's own schedules need no such check."""
    if not spec.definition.open_params:
        return
    try:
        if whole_run:
            lr_curve(spec.name, steps, **spec.params)
        else:
            LRDriver(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), spec, steps)
    except Exception as err:
        own = {k: v for k, v in spec.params.items() if k not in WARMUP_PARAMS}
        given = ", ".join(f"{k}={v!r}" for k, v in own.items()) or "no parameters"
        raise ValueError(
            f"schedule {spec.name!r} ({given}) failed: {type(err).__name__}: {err}"
        ) from err


def _constant_metric() -> Iterator[float]:
    while True:
        yield 1.0
