"""Stepping a schedule once per optimizer step, whatever kind it is."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from schedlab.schedules.builders import build_scheduler, warmup_ramp
from schedlab.schedules.registry import ScheduleSpec

Metric = Callable[[], float]


class LRDriver:
    """Steps a schedule after every optimizer step; feeds ReduceLROnPlateau its watched loss.

    SequentialLR cannot pass a metric on to ReduceLROnPlateau, so the plateau's warm-up is
    driven here: the ramp for the first ``warmup_steps`` steps, the plateau after it. It is a
    drop-in for torch's schedulers: ``step()`` takes no argument unless the schedule watches a
    loss, ``get_last_lr()`` gives every group's LR, ``state_dict()`` / ``load_state_dict()``
    resume it exactly.
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

    def get_last_lr(self) -> list[float]:
        """The LR of every parameter group, as torch's schedulers give it."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Everything that decides the LRs to come (the optimizer's own state aside)."""
        return {
            "step_count": self.step_count,
            "scheduler": self.scheduler.state_dict(),
            "ramp": self.ramp.state_dict() if self.ramp is not None else None,
            "window": list(self.window) if self.is_plateau else None,
            "lrs": self.get_last_lr(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ramp is not None and state["ramp"] is not None:
            self.ramp.load_state_dict(state["ramp"])
        if self.is_plateau:
            self.window.clear()
            self.window.extend(state["window"])
        for group, lr in zip(self.optimizer.param_groups, state["lrs"], strict=True):
            group["lr"] = lr

    @property
    def is_plateau(self) -> bool:
        return isinstance(self.scheduler, sched.ReduceLROnPlateau)

    @property
    def watches_heldout(self) -> bool:
        return self.is_plateau and self.watch == "heldout"

    def step(self, train_loss: float | None = None, heldout_loss: Metric | None = None) -> None:
        """Advance one optimizer step. Only a plateau schedule reads a loss: ``train_loss`` (it
        watches the training loss) or ``heldout_loss``, a function called only when it looks."""
        if self.is_plateau and self.watch == "train" and train_loss is None:
            raise ValueError(
                "this plateau schedule watches the training loss: call step(loss) after each "
                "optimizer step"
            )
        self.step_count += 1
        if not isinstance(self.scheduler, sched.ReduceLROnPlateau):
            self.scheduler.step()
            return
        if self.step_count <= self.warmup:
            assert self.ramp is not None
            self.ramp.step()
            return
        if self.watch == "train":
            assert train_loss is not None
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
