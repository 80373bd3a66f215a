"""Fleet checkpoints kept in the study's store: loaded when a fleet starts, saved as it trains.

The local executor's worker has them; a Ray task does not open the store, so fleets trained on
Ray start over when interrupted (their finished runs are kept, as always).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from schedlab.plan import RunSpec
from schedlab.store.store import Store
from schedlab.training.checkpoint import Checkpoint, CheckpointPolicy, Checkpoints


@dataclass
class StoreCheckpoints:
    store: Store
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)

    def for_fleet(self, fleet: list[RunSpec]) -> tuple[Checkpoints, str | None]:
        """The fleet's checkpoints, and a note when they cannot be used together (members at
        different steps, as after another driver's work on them: the fleet starts over)."""
        states = [self.store.checkpoint_state(run.run_id) for run in fleet]
        resume = [Checkpoint.from_bytes(s) if s is not None else None for s in states]
        note = None
        if len({c.step if c is not None else 0 for c in resume}) > 1:
            note = "its fleet's checkpoints were at different steps: trained from the start"
            resume = [None] * len(fleet)
        resume = [
            c and dataclasses.replace(c, snapshots=tuple(self.store.snapshots(run.run_id, c.step)))
            for run, c in zip(fleet, resume, strict=True)
        ]

        def save(k: int, checkpoint: Checkpoint) -> None:
            run_id, step = fleet[k].run_id, checkpoint.step
            self.store.save_checkpoint(run_id, step, checkpoint.to_bytes(), checkpoint.snapshots)

        return Checkpoints(resume, save, self.policy), note
