"""What an executor is: it runs planned fleets and yields one outcome per run.

Executors move fleets, not logic: claims, commits, failures and interrupts live once, in
``driver``. The local executor trains fleets in this process; another (Ray) implements the
same ``run``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from schedlab.plan import RunSpec
from schedlab.store.records import Commit


@dataclass
class RunOutcome:
    run: RunSpec
    commit: Commit | None  # what to store; None when the run failed
    error: str | None = None  # why it failed


class Executor(Protocol):
    # Fleets handed over at once; the driver claims this many before calling ``run``.
    capacity: int

    def fleet_size(self, runs: int, largest: int) -> int:
        """Runs per fleet for ``runs`` runs to train, at most ``largest``."""
        ...

    def run(self, fleets: list[list[RunSpec]]) -> Iterator[RunOutcome]:
        """Train and measure every run of ``fleets``; yield each run's outcome as it is ready."""
        ...
