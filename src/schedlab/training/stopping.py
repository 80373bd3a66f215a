"""Stopping training cleanly: a request (SIGINT, SIGTERM) that fleets honour at their next step
boundary, where they checkpoint their members and raise ``StopRequested``.

Outside a fleet's training loop (imports, measuring, the store) a request is an immediate
interrupt, as is a second request while the first is being honoured.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP = threading.Event()
_lock = threading.Lock()
_training = 0  # training loops running now
_signal: int | None = None


class StopRequested(KeyboardInterrupt):
    """Training stopped at a step boundary on request; its members are checkpointed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (how SLURM and Kubernetes stop a job) arrived outside a training loop."""


@contextmanager
def training() -> Iterator[None]:
    """Marks a training loop as running: a request then waits for its next step boundary."""
    global _training
    with _lock:
        _training += 1
    try:
        yield
    finally:
        with _lock:
            _training -= 1


def request_stop(signum: int, frame: object) -> None:
    """The signal handler: ask the training loops to stop, or interrupt now."""
    global _signal
    _signal = signum
    if STOP.is_set() or not _training:
        STOP.set()
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    STOP.set()


def requested_signal() -> int | None:
    """The signal that asked to stop, if one did."""
    return _signal


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM ask to stop while inside; the handlers before are restored after."""
    global _signal
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    STOP.clear()
    _signal = None
    for s in before:
        signal.signal(s, request_stop)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        STOP.clear()
