"""The states of a run, declared once, and what makes a running run stale."""

from __future__ import annotations

import os
import socket
from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"  # claimed by a driver that renews its lease
    DONE = "done"
    FAILED = "failed"
    DIVERGED = "diverged"
    # Never stored: a running run whose lease expired or whose driver is gone. The next
    # driver that claims it trains it again.
    STALE = "stale"


STORED = tuple(s for s in RunStatus if s is not RunStatus.STALE)
FINISHED = (RunStatus.DONE, RunStatus.DIVERGED)
COLOURS = {
    RunStatus.DONE: "green",
    RunStatus.DIVERGED: "yellow",
    RunStatus.FAILED: "red",
    RunStatus.RUNNING: "cyan",
    RunStatus.STALE: "magenta",
    RunStatus.PENDING: "dim",
}


def owner_name() -> str:
    """Who claims: this host and process (a driver adds a token of its own)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` was a process on this host that no longer exists.

    Lets a driver on the same machine take over a killed driver's runs at once instead of
    waiting for the lease to run out; an owner on another host is judged by its lease alone.
    """
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        return False
    return False


def shown_status(status: str, owner: str | None, lease_expires: float | None, now: float) -> str:
    """The status a user is shown: running runs whose lease is gone are stale."""
    if status != RunStatus.RUNNING:
        return status
    if lease_expires is None or lease_expires < now or owner_is_dead(owner):
        return RunStatus.STALE
    return status
