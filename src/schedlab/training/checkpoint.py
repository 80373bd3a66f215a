"""A fleet member's state at a step boundary, from which it trains on bitwise as if never stopped.

What it holds: the member's rows of the fleet's weights, AdamW moments, EMA and tracked post-hoc
EMAs (the fleet's row layout is the same in every fleet size and position), its losses and LRs
so far, its held-out curve, the held-out values its plateau looked at, its divergence, the
training time it has had, its post-hoc EMA snapshots so far (not in its bytes: the store keeps
them in a table of their own), and its data streams' states at the start of the current epoch
(that epoch is drawn again and its first batches skipped). Its LR schedule is not stored: it
is rebuilt and stepped again through the recorded losses (and looks), which gives the same LR
bit for bit and holds for any scheduler, user-defined ones included.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from schedlab.averaging.plan import Snapshot

ROWS = ("weights", "exp_avg", "exp_avg_sq", "ema")

# (member index in the fleet, its checkpoint): where a fleet hands its checkpoints.
SaveCheckpoint = Callable[[int, "Checkpoint"], None]


@dataclass
class Checkpoint:
    step: int  # optimizer steps done
    rows: dict[str, np.ndarray]  # ROWS (and tracked post-hoc EMAs) -> the member's [P] row
    losses: np.ndarray  # [step] training losses
    lrs: np.ndarray  # [step] LRs
    curve: np.ndarray  # [m, 2] held-out EMA loss curve so far
    looks: np.ndarray  # held-out losses its plateau looked at, in order
    diverged_at: int | None
    training_time: float  # seconds of training it has had, its share of its fleets' time
    order_state: np.ndarray  # data order stream's state at the current epoch's start
    noise_state: np.ndarray  # timestep/noise stream's state at the current epoch's start
    snapshots: tuple[Snapshot, ...] = ()  # post-hoc EMA snapshots so far; not in to_bytes

    def to_bytes(self) -> bytes:
        meta = {
            "step": self.step,
            "diverged_at": self.diverged_at,
            "training_time": self.training_time,
        }
        arrays = {f"row_{name}": row for name, row in self.rows.items()}
        buffer = io.BytesIO()
        np.savez(
            buffer,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            losses=self.losses,
            lrs=self.lrs,
            curve=self.curve,
            looks=self.looks,
            order_state=self.order_state,
            noise_state=self.noise_state,
            **arrays,
        )
        return buffer.getvalue()

    @staticmethod
    def from_bytes(blob: bytes) -> Checkpoint:
        with np.load(io.BytesIO(blob)) as f:
            meta = json.loads(f["meta"].tobytes())
            return Checkpoint(
                step=meta["step"],
                rows={key[4:]: f[key] for key in f.files if key.startswith("row_")},
                losses=f["losses"],
                lrs=f["lrs"],
                curve=f["curve"],
                looks=f["looks"],
                diverged_at=meta["diverged_at"],
                training_time=meta["training_time"],
                order_state=f["order_state"],
                noise_state=f["noise_state"],
            )

    def stream_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.order_state.copy()), torch.from_numpy(self.noise_state.copy())


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a fleet saves its members: every ``every_steps`` steps, or when ``every_seconds``
    of training have passed since the last save (the default: about once a minute); and at
    each of ``at_steps`` (where a branch starts from a trunk)."""

    every_steps: int | None = None
    every_seconds: float = 60.0
    at_steps: frozenset[int] = frozenset()

    def due(self, step: int, seconds_since: float) -> bool:
        if step in self.at_steps:
            return True
        if self.every_steps is not None:
            return step % self.every_steps == 0
        return seconds_since >= self.every_seconds


@dataclass
class Checkpoints:
    """A fleet's checkpoints: where each member resumes (None: from scratch), where new ones go
    (member index in the fleet, checkpoint; called from the shards' threads), and when."""

    resume: list[Checkpoint | None]
    save: SaveCheckpoint
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
