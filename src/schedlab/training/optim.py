"""The reference loop's optimizer for a schedule, and the weights evaluation must read."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch.optim import Optimizer

from schedlab.schedules.registry import ScheduleSpec


def build_optimizer(
    parameters: Iterable[torch.Tensor], spec: ScheduleSpec, lr: float, weight_decay: float
) -> Optimizer:
    """AdamW with torch defaults, or AdamWScheduleFree for ``schedule_free``.

    Schedule-free's own warm-up is left at 0: the generic ``warmup_steps`` ramp drives the LR it
    reads from its param group, so warm-ups are the same LinearLR for every schedule.
    """
    if spec.definition.optimizer == "schedule_free":
        from schedulefree import AdamWScheduleFree

        optimizer = AdamWScheduleFree(
            parameters,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=0,
            r=spec.params["r"],
            weight_lr_power=spec.params["weight_lr_power"],
        )
        optimizer.train()
        return optimizer
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


def is_schedule_free(optimizer: Optimizer) -> bool:
    return hasattr(optimizer, "train") and hasattr(optimizer, "eval")


@contextmanager
def evaluation_weights(optimizer: Optimizer) -> Iterator[None]:
    """Inside, the model holds the weights to evaluate (schedule-free's averaged x sequence)."""
    if not is_schedule_free(optimizer):
        yield
        return
    optimizer.eval()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        optimizer.train()  # type: ignore[attr-defined]


def finish_training(optimizer: Optimizer) -> None:
    """Leave the model holding its evaluation weights for good."""
    if is_schedule_free(optimizer):
        optimizer.eval()  # type: ignore[attr-defined]
