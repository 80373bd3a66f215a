"""How `schedlab run` shows progress: bars on a terminal; in a log (nohup, SLURM, a CI job)
timestamped lines: one when a fleet starts, one per finished run, and, while a fleet trains in
this process, one every PROGRESS_LINE_S seconds with its step, loss and time left."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from schedlab.cli.common import err

if TYPE_CHECKING:
    from schedlab.execute.driver import Events
    from schedlab.plan import RunSpec

PROGRESS_LINE_S = 30.0


class LogLines:
    """Progress as lines for a log, the per-step ones at most every PROGRESS_LINE_S seconds."""

    def __init__(self, steps: int) -> None:
        self.steps, self.what = steps, ""
        self.since: tuple[float, int] | None = None  # (time, step) of the fleet's first report
        self.last_line = 0.0

    @staticmethod
    def line(text: str) -> None:
        err.print(f"{time.strftime('%H:%M:%S')} {text}", markup=False, highlight=False)

    def length(self, steps: int) -> None:
        self.steps = steps

    def started(self, what: str, done: int, total: int) -> None:
        self.what, self.since = what, None
        self.last_line = time.monotonic()
        self.line(f"{what}: started ({done} of {total} runs done)")

    def finished(self, run: RunSpec, status: str) -> None:
        from schedlab.execute.driver import describe

        self.line(f"{describe(run)} (lr {run.settings.train.lr:.3g}): {status}")

    def step(self, n: int, loss: float, lr: float) -> None:
        now = time.monotonic()
        if self.since is None:  # the first report: resumed fleets start past step 0
            self.since = (now, n)
            return
        if now - self.last_line < PROGRESS_LINE_S:
            return
        self.last_line = now
        began, first = self.since
        rate = (n - first) / (now - began) if n > first else 0.0
        left = f"{(self.steps - n) / rate:.0f} s left" if rate > 0 else "time left unknown"
        self.line(
            f"{self.what}: step {n} of {self.steps}, loss {loss:.4f}, max lr {lr:.2e}, "
            f"{left} in training"
        )


@contextmanager
def progress_display(
    steps: int, follow_steps: bool
) -> Iterator[tuple[Events, Callable[[int, float, float], None] | None, Any]]:
    """(events, per-step callback, the live bar) for `run`."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from schedlab.execute.driver import Events

    if not err.is_terminal:
        lines = LogLines(steps)
        events = Events(lines.started, lines.finished, lines.length)
        yield events, lines.step if follow_steps else None, None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
    ) as bar:
        overall = bar.add_task("runs", total=None, info="")
        # Steps are followed in this process only: a Ray task reports when its fleet is done.
        current = bar.add_task("run", total=steps, info="", visible=follow_steps)

        def started(description: str, done: int, total: int) -> None:
            bar.update(overall, total=total, completed=done)
            bar.update(current, completed=0, description=description, info="")

        def step(n: int, loss: float, lr: float) -> None:
            bar.update(current, completed=n, info=f"loss {loss:.4f} lr {lr:.2e}")

        def length(steps: int) -> None:
            bar.update(current, total=steps)

        yield Events(started, lambda run, status: bar.advance(overall), length), step, bar
