"""Where fleets resume from and save their checkpoints.

``StoreCheckpoints``: the study's store, for fleets trained in the driver's process. A Ray
task never opens the store: its fleet resumes from checkpoints handed to it (the store's, or
newer ones its earlier attempt sent) and sends new ones to a box on the driver's node, which
the driver drains into the store (``schedlab.execute.ray_executor``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from schedlab.plan import RunSpec
from schedlab.store.store import Store
from schedlab.training.checkpoint import Checkpoint, CheckpointPolicy, Checkpoints

RESTARTED = "its fleet's checkpoints were at different steps: trained from the start"


class FleetCheckpoints(Protocol):
    def for_fleet(self, fleet: list[RunSpec]) -> tuple[Checkpoints, str | None]:
        """The fleet's checkpoints, and a note when they could not be used."""
        ...


def at_one_step(resume: list[Checkpoint | None]) -> tuple[list[Checkpoint | None], str | None]:
    """``resume`` when its members are at one step; else none of them, and a note (a fleet's
    members train in lockstep: members at different steps, as after another driver's work on
    them, start over)."""
    if len({c.step if c is not None else 0 for c in resume}) > 1:
        return [None] * len(resume), RESTARTED
    return resume, None


@dataclass
class StoreCheckpoints:
    store: Store
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)

    def stored(self, run: RunSpec) -> Checkpoint | None:
        """The run's latest stored checkpoint with its post-hoc EMA snapshots so far; for a
        branch with none of its own, its trunk's checkpoint at the branch step (if kept)."""
        state = self.store.checkpoint_state(run.run_id)
        if state is None:
            return branch_point(self.store, run)
        checkpoint = Checkpoint.from_bytes(state)
        snapshots = tuple(self.store.snapshots(run.run_id, checkpoint.step))
        return dataclasses.replace(checkpoint, snapshots=snapshots)

    def save(self, run_id: str, checkpoint: Checkpoint) -> None:
        self.store.save_checkpoint(
            run_id,
            checkpoint.step,
            checkpoint.to_bytes(),
            checkpoint.snapshots,
            checkpoint.training_time,
        )

    def for_fleet(self, fleet: list[RunSpec]) -> tuple[Checkpoints, str | None]:
        resume, note = at_one_step([self.stored(run) for run in fleet])

        def save(k: int, checkpoint: Checkpoint) -> None:
            self.save(fleet[k].run_id, checkpoint)

        return Checkpoints(resume, save, keeping(self.policy, fleet)), note


def branch_point(store: Store, run: RunSpec) -> Checkpoint | None:
    """A branch's start: its trunk's checkpoint at the branch step, if the store keeps it (the
    trunk's post-hoc EMAs are not the branch's: it tracks none)."""
    if run.branch is None:
        return None
    state = store.branch_point(run.branch.parent, run.branch.step)
    return Checkpoint.from_bytes(state) if state is not None else None


def keeping(policy: CheckpointPolicy, fleet: list[RunSpec]) -> CheckpointPolicy:
    """``policy``, also saving at every step a member keeps its checkpoint at for branches."""
    steps = frozenset(step for run in fleet for step in run.keep_at)
    return dataclasses.replace(policy, at_steps=policy.at_steps | steps) if steps else policy


@dataclass
class HandedCheckpoints:
    """A fleet's checkpoints in a process without the store: it resumes from ``latest`` (run
    id -> checkpoint) and hands new ones to ``send(run id, checkpoint)``."""

    latest: dict[str, Checkpoint]
    send: Callable[[str, Checkpoint], None]
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)

    def for_fleet(self, fleet: list[RunSpec]) -> tuple[Checkpoints, str | None]:
        resume, note = at_one_step([self.latest.get(run.run_id) for run in fleet])

        def save(k: int, checkpoint: Checkpoint) -> None:
            self.send(fleet[k].run_id, checkpoint)

        return Checkpoints(resume, save, keeping(self.policy, fleet)), note


def by_step(fleet: list[RunSpec], latest: dict[str, Checkpoint]) -> list[list[RunSpec]]:
    """The fleet split into fleets whose members resume at one step (shards of a fleet save at
    their own steps), in the order of their first member."""
    groups: dict[int, list[RunSpec]] = {}
    for run in fleet:
        checkpoint = latest.get(run.run_id)
        groups.setdefault(checkpoint.step if checkpoint is not None else 0, []).append(run)
    return list(groups.values())
