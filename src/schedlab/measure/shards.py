"""Measuring K runs as one batched computation: the members split into single-threaded shards.

Sampling and the reference eval loss run K models' forward passes as one ``FleetDenoiser``
each shard. As in training, every shard computes single-threaded in its own thread with
denormals flushed, so a run's numbers are bitwise the same measured alone or among K, in any
shard, whatever thread count torch has (the fleet's aligned layout does the rest).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")


def in_shards(
    count: int, work: Callable[[range], Sequence[T]], at_once: int | None = None
) -> list[T]:
    """``work(part)`` for parts of ``range(count)``, one shard per thread torch computes with,
    at most ``at_once`` members at a time; the results of every member, in order."""
    at_once = at_once or count
    shards = max(1, min(torch.get_num_threads(), count, at_once))
    results: list[T] = []
    with ThreadPoolExecutor(shards, initializer=_single_threaded) as pool:
        for lo in range(0, count, at_once):
            group = range(lo, min(lo + at_once, count))
            size = math.ceil(len(group) / shards)
            parts = [group[i : i + size] for i in range(0, len(group), size)]
            for done in pool.map(work, parts):
                results += list(done)
    return results


def _single_threaded() -> None:
    """A measuring thread computes single-threaded and flushes denormals, as a training
    shard's thread does (its own settings; the thread ends with the pool)."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
