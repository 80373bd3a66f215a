"""The LR a schedule gives at each step, for plots and tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from schedlab.schedules.driver import LRDriver
from schedlab.schedules.registry import check_base_lr, resolve


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
    spec = resolve(name, params, steps)
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


def _constant_metric() -> Iterator[float]:
    while True:
        yield 1.0
