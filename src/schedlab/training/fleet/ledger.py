"""A fleet's per-step bookkeeping, kept on its device: LRs, losses and divergence.

Reading a value back from a GPU waits for every kernel queued before it, so the fleet reads
nothing back per step. The LRs of loss-independent schedules come from a [steps, K] table
computed before training; each step's K losses go into an [N, K] buffer on the device, where
divergence is also found (a loss NaN/inf or above its bound freezes the member: its LR becomes
0 from that step on). The host reads the buffer once every N steps, or sooner when it needs a
member's state (a held-out curve point, a snapshot, a checkpoint, a progress line, the end).
A plateau schedule chooses its next LR from this step's loss, so a fleet with one reads every
step; its other members still take their LRs from the table.

The numbers are those of stepping every schedule on the host: the table holds the same float64
LRs, and the divergence test is ``TrainSettings.diverged`` in float64 on the device.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from schedlab.config.settings import DIVERGE_FACTOR, TrainSettings
from schedlab.schedules.curves import spec_lr_curve
from schedlab.schedules.driver import LRDriver
from schedlab.training.common import Member

READ_EVERY = 50  # steps between reads of a fleet without plateau schedules

Look = Callable[[int], Callable[[], float] | None]  # member k -> its held-out look, if it has one


def schedule_table(members: list[Member], drivers: list[LRDriver], steps: int) -> np.ndarray:
    """[steps, K] float64: the LR each loss-independent member's schedule gives at each step;
    plateau members' columns are NaN, filled as training decides them. Members with one
    schedule and base LR share one curve."""
    table = np.full((steps, len(members)), np.nan)
    curves: dict[tuple[float, str], np.ndarray] = {}
    for k, member in enumerate(members):
        if drivers[k].is_plateau:
            continue
        key = (member.lr, repr(member.schedule))
        if key not in curves:
            curves[key] = spec_lr_curve(member.schedule, steps, member.lr)
        table[:, k] = curves[key]
    return table


class FleetLedger:
    """The LR, loss and divergence of each of K members at each step, on the fleet's device,
    copied into host arrays (``losses``, ``lrs``, ``diverged_at``) when read."""

    def __init__(
        self,
        members: list[Member],
        drivers: list[LRDriver],
        settings: TrainSettings,
        device: torch.device,
        losses: np.ndarray,
        lrs: np.ndarray,
        diverged_at: list[int | None],
        start: int,
    ) -> None:
        """``losses``, ``lrs`` [steps, K] and ``diverged_at`` hold what was trained before
        ``start`` (from checkpoints); the ledger fills in the rest as it reads."""
        k_runs = len(drivers)
        self.drivers, self.losses, self.lrs, self.diverged_at = drivers, losses, lrs, diverged_at
        self.table = schedule_table(members, drivers, settings.steps)
        self.host_stepped = [k for k, d in enumerate(drivers) if d.is_plateau]
        for k in self.host_stepped:  # its LR for the next step, as its schedule now stands
            if start < settings.steps:
                self.table[start, k] = drivers[k].lr
        self.device_table = torch.from_numpy(self.table).to(device)
        self.read_every = 1 if self.host_stepped else READ_EVERY
        self.bound = settings.diverge_factor or DIVERGE_FACTOR
        self.buffer = torch.empty(self.read_every, k_runs, dtype=torch.float64, device=device)
        first = losses[0] if start else np.full(k_runs, np.nan)
        self.first = torch.from_numpy(first.copy()).to(device)
        frozen = [-1 if s is None else s for s in diverged_at]
        self.frozen_at = torch.tensor(frozen, dtype=torch.float64, device=device)
        self.live = self.frozen_at < 0
        self.unread = start  # the first step whose losses the host has not read

    def record(self, step: int, run_losses: torch.Tensor) -> torch.Tensor:
        """Step ``step``'s losses [K] (before its update); the LR each member updates with
        (0 for a diverged one, at its diverging step too), a [K] float64 tensor."""
        value = run_losses.to(torch.float64)
        if step == 0:
            self.first.copy_(value)
        ok = torch.isfinite(value) & (value <= self.bound * self.first)
        newly = self.live & ~ok
        self.frozen_at.masked_fill_(newly, float(step))
        self.live &= ok
        self.buffer[step - self.unread].copy_(value)
        return torch.where(self.live, self.device_table[step], 0.0)

    def due(self, done: int) -> bool:
        """Whether the buffer is full after ``done`` steps."""
        return done - self.unread >= self.read_every

    def read(self, done: int, look: Look) -> None:
        """Copy steps ``unread``..``done`` - 1 to the host in one read; step the plateau
        schedules through them (``look(k)``: member k's held-out look)."""
        count = done - self.unread
        if count <= 0:
            return
        both = np.array(torch.cat([self.buffer[:count].flatten(), self.frozen_at]).tolist())
        values = both[: self.buffer.shape[1] * count].reshape(count, -1)
        frozen = both[self.buffer.shape[1] * count :]
        self.diverged_at[:] = [None if s < 0 else int(s) for s in frozen.tolist()]
        rows = slice(self.unread, done)
        self.losses[rows], self.lrs[rows] = values, self.table[rows]
        for step in range(self.unread, done):
            for k in self.host_stepped:
                at = self.diverged_at[k]
                if at is not None and at <= step:
                    continue
                self.drivers[k].step(float(values[step - self.unread, k]), look(k))
                if step + 1 < len(self.table):
                    self.table[step + 1, k] = self.drivers[k].lr
        if self.host_stepped and done < len(self.table):
            columns = self.host_stepped
            self.device_table[done, columns] = torch.from_numpy(self.table[done, columns]).to(
                self.device_table.device
            )
        self.unread = done

    def active(self) -> list[bool]:
        """Which members have not diverged, as of the last read."""
        return [s is None for s in self.diverged_at]
