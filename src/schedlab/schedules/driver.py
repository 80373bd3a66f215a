"""Stepping a schedule once per optimizer step, whatever kind it is."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from schedlab.schedules.builders import build_scheduler, warmup_ramp
from schedlab.schedules.registry import ScheduleSpec

Metric = Callable[[], float]


class LRDriver:
    """Steps a schedule after every optimizer step; feeds ReduceLROnPlateau its watched loss.

    SequentialLR cannot pass a metric on to ReduceLROnPlateau, so the plateau's warm-up is
    driven here: the ramp for the first ``warmup_steps`` steps, the plateau after it.
    """

    def __init__(self, optimizer: Optimizer, spec: ScheduleSpec, steps: int) -> None:
        self.optimizer = optimizer
        self.warmup = spec.warmup_steps
        self.step_count = 0
        self.scheduler = build_scheduler(optimizer, spec, steps)
        self.ramp: sched.LRScheduler | None = None
        if isinstance(self.scheduler, sched.ReduceLROnPlateau):
            self.every = int(spec.params["every"])
            self.watch = str(spec.params["watch"])
            self.window: deque[float] = deque(maxlen=int(spec.params["window"]))
            if self.warmup:
                self.ramp = warmup_ramp(optimizer, spec)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def is_plateau(self) -> bool:
        return isinstance(self.scheduler, sched.ReduceLROnPlateau)

    @property
    def watches_heldout(self) -> bool:
        return self.is_plateau and self.watch == "heldout"

    def step(self, train_loss: float, heldout_loss: Metric | None = None) -> None:
        """Advance one optimizer step; ``heldout_loss`` is called only when the plateau looks."""
        self.step_count += 1
        if not isinstance(self.scheduler, sched.ReduceLROnPlateau):
            self.scheduler.step()
            return
        if self.step_count <= self.warmup:
            assert self.ramp is not None
            self.ramp.step()
            return
        if self.watch == "train":
            self.window.append(train_loss)
        if (self.step_count - self.warmup) % self.every:
            return
        if self.watch == "train":
            metric = sum(self.window) / len(self.window)
        elif heldout_loss is None:
            raise ValueError("plateau watching the held-out loss needs a held-out metric")
        else:
            metric = heldout_loss()
        self.scheduler.step(metric)
