"""``train_fleet``: a fleet split into single-threaded shards that step side by side.

Determinism first: every shard computes single-threaded, so a run's arithmetic never depends
on how many threads torch has, on the fleet's size, on the shard it lands in or on its
position there (with the fleet's 64-byte aligned layout, see ``model``). Speed second: on a
CPU the members split into one shard per thread torch would compute with, each stepping in its
own Python thread; on 2 cores two single-threaded shards beat one two-threaded fleet by 5-9%
(no thread hand-offs around small ops). A fleet of one run therefore computes on one core.

Denormals are flushed to zero while a fleet trains (a per-thread setting): Adam's first moments
of weights whose gradient is exactly 0 (dead ReLU units) decay by 0.9 a step through the
denormal range, where every operation on them is ~10x slower; unflushed, a fleet slowed by ~20%
after its first thousand steps. Values below 1.2e-38 (float32) become 0, far inside round-off.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from schedlab.averaging.plan import PosthocPlan
from schedlab.config.engines import engine_for
from schedlab.config.settings import TrainSettings
from schedlab.training.checkpoint import Checkpoint, CheckpointPolicy, Checkpoints
from schedlab.training.common import Member, Progress, TrainResult, member_model
from schedlab.training.fleet.loop import Curves, ShardJob, ShardStoppedError, train_shard
from schedlab.training.stopping import training


def train_fleet(
    members: list[Member],
    settings: TrainSettings,
    device: str | torch.device = "cpu",
    heldout_loss: Callable[[int, nn.Module], float] | None = None,
    progress: Progress | None = None,
    use_compile: bool | None = None,
    shards: int | None = None,
    checkpoints: Checkpoints | None = None,
    posthoc: PosthocPlan | None = None,
    curves: Curves | None = None,
) -> list[TrainResult]:
    """Train every member for ``settings.steps`` steps; one TrainResult per member.

    ``heldout_loss(k, model)`` feeds member k's plateau schedule when it watches the held-out
    loss, and measures each member's EMA weights for its held-out curve. Each result's
    training_time is the fleet's wall time, less the time its curves took, divided by K
    (compilation included). ``use_compile`` None means: on a GPU only (on 2 CPU cores
    torch.compile did not make the step faster). ``shards`` defaults to one per thread torch
    computes with (CPU); ``progress`` follows the first shard. With ``checkpoints``, members
    resume from theirs and save new ones as its policy says, and a stop request checkpoints
    them all (see ``schedlab.training.stopping``). With ``posthoc`` every member tracks those
    power-function EMAs and returns their snapshots. ``curves(k, first_step, losses, lrs)``
    is told each member's new steps every 50 steps and at the end (a live view).
    """
    if any(engine_for("fleet", m.schedule) != "fleet" for m in members):
        raise ValueError("schedule_free runs train in the reference loop, not in a fleet")
    shape = members[0].points.shape
    if any(m.points.shape != shape or m.model != members[0].model for m in members):
        raise ValueError("every member of a fleet needs the same model and shape of data")
    device = torch.device(device)
    if use_compile is None:
        use_compile = device.type == "cuda"
    if shards is None:
        # Dynamo is not thread-safe: a compiled fleet trains as one shard.
        single = device.type != "cpu" or use_compile
        shards = 1 if single else min(torch.get_num_threads(), len(members))
    size = math.ceil(len(members) / shards)
    groups = [(lo, members[lo : lo + size]) for lo in range(0, len(members), size)]

    resume = checkpoints.resume if checkpoints is not None else [None] * len(members)
    # A fleet's optimizer counts its steps once for all members (the driver groups runs so).
    steps = {c.step if c is not None else 0 for c in resume}
    if len(steps) != 1:
        raise ValueError(f"a fleet's members must resume at one step, got {sorted(steps)}")

    def train(
        offset: int, group: list[Member], report: Progress | None
    ) -> tuple[list[TrainResult], float]:
        def heldout(k: int, model: nn.Module) -> float:
            assert heldout_loss is not None
            return heldout_loss(offset + k, model)

        def save(k: int, checkpoint: Checkpoint) -> None:
            assert checkpoints is not None
            checkpoints.save(offset + k, checkpoint)

        def told(k: int, first: int, losses: np.ndarray, lrs: np.ndarray) -> None:
            assert curves is not None
            curves(offset + k, first, losses, lrs)

        job = ShardJob(
            group,
            initial[offset : offset + len(group)],
            resume[offset : offset + len(group)],
            save if checkpoints is not None else None,
            checkpoints.policy if checkpoints is not None else CheckpointPolicy(),
            len(members),
            posthoc,
            told if curves is not None else None,
        )
        watch = heldout if heldout_loss is not None else None
        return train_shard(job, settings, device, watch, report, use_compile, stop)

    # Built here, not in the shards: seeding a model's initialization uses torch's global RNG.
    initial = [member_model(m, settings) for m in members]
    stop = threading.Event()
    start = time.perf_counter()
    with (
        training(),
        ThreadPoolExecutor(max(1, len(groups) - 1)) as pool,
        _single_threaded(device),
    ):
        others = [pool.submit(_in_shard_thread, stop, train, lo, g, None) for lo, g in groups[1:]]
        try:
            shard_results = [train(0, groups[0][1], progress)]
        except BaseException as err:
            stop.set()
            errors = [future.exception() for future in others]  # every shard has stopped
            # A shard's own error says more than that it was stopped. An interrupt stays an
            # interrupt: a shard that broke because of it (a lazy import cut short in another
            # thread) must not turn it into a failure.
            own = [e for e in errors if e is not None and not isinstance(e, ShardStoppedError)]
            if own and not isinstance(err, KeyboardInterrupt):
                raise own[0] from None
            raise
        shard_results += [future.result() for future in others]
    # Shards measure side by side: the wall time less the slowest shard's curves.
    measuring = max(seconds for _, seconds in shard_results)
    training_time = (time.perf_counter() - start - measuring) / len(members)
    results = [r for shard, _ in shard_results for r in shard]
    return [dataclasses.replace(r, training_time=r.training_time + training_time) for r in results]


def _in_shard_thread(
    stop: threading.Event, train: Callable[..., tuple[list[TrainResult], float]], *args: object
) -> tuple[list[TrainResult], float]:
    torch.set_num_threads(1)  # this thread's own setting; the thread ends with the shard
    torch.set_flush_denormal(True)
    try:
        return train(*args)
    except BaseException:
        stop.set()
        raise


@contextmanager
def _single_threaded(device: torch.device) -> Iterator[None]:
    """The calling thread trains its shard single-threaded, flushing denormals on a CPU;
    its settings are restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(device.type == "cpu")
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(before)
