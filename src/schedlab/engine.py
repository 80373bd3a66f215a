"""The fleet engine: K runs of one model shape trained together as one vectorized computation.

Each member keeps everything that makes it its own run: its dataset, its seed's initial weights,
data order, timesteps and noise (the reference loop's draws, so paired seeds hold across
engines), its own torch LR scheduler (ReduceLROnPlateau fed with its own loss), its AdamW state,
its gradient clipping by its own norm, its EMA, and its divergence: a member whose loss turns
NaN/inf is frozen and recorded as diverged while the others go on. What the members share is
the step: every matmul is batched over the K axis, so one fleet step costs K runs' arithmetic
but only one run's worth of Python, dispatch and kernel launches.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from schedlab.ema import TensorEMA
from schedlab.fleet import FleetDenoiser
from schedlab.model import Denoiser
from schedlab.optim import FleetAdamW, clip_coefficients
from schedlab.schedules import LRDriver, ScheduleSpec
from schedlab.settings import TrainSettings
from schedlab.train import (
    PROGRESS_EVERY,
    Progress,
    TrainResult,
    batch_bounds,
    build_model,
    epoch_draws,
    noise_schedule,
)


@dataclass(frozen=True)
class Member:
    points: np.ndarray  # the member's training set [n, 2]
    schedule: ScheduleSpec
    seed: int
    lr: float  # the member's base LR


def fleet_key(settings: TrainSettings) -> tuple:
    """Runs whose settings agree on this train together (the LR may differ per member)."""
    return tuple(sorted(settings.model_dump(exclude={"lr"}).items()))


def supports(schedule: ScheduleSpec) -> bool:
    """Schedule-free replaces the optimizer itself; it trains in the reference loop."""
    return schedule.definition.optimizer == "adamw"


def stand_in_driver(lr: float, schedule: ScheduleSpec, steps: int) -> LRDriver:
    """A member's schedule, driving a one-parameter stand-in optimizer whose LR the fleet reads.

    The stand-in is stepped once (a no-op without gradients) so torch sees the usual order of
    optimizer and scheduler steps.
    """
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    driver = LRDriver(optimizer, schedule, steps)
    optimizer.step()
    return driver


class LossesAndGradients:
    """The fleet's forward and backward, through torch.compile when asked, with a fallback.

    If compiling or running the compiled step raises (some Inductor versions fail on such
    graphs), the step is redone eagerly and every later step runs eagerly; ``failure`` says why.
    """

    def __init__(self, fleet: FleetDenoiser, use_compile: bool) -> None:
        self.eager = fleet.losses_and_gradients
        self.compiled = torch.compile(self.eager) if use_compile else None
        self.failure: str | None = None

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as err:  # any compiler failure: fall back, say so once
                self.failure = f"{type(err).__name__}: {err}".splitlines()[0]
                warnings.warn(
                    f"torch.compile failed, the fleet trains eagerly: {self.failure}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.compiled = None
        return self.eager(*args)


def train_fleet(
    members: list[Member],
    settings: TrainSettings,
    device: str | torch.device = "cpu",
    heldout_loss: Callable[[int, Denoiser], float] | None = None,
    progress: Progress | None = None,
    use_compile: bool | None = None,
    shards: int | None = None,
) -> list[TrainResult]:
    """Train every member for ``settings.steps`` steps; one TrainResult per member.

    ``heldout_loss(k, model)`` feeds member k's plateau schedule when it watches the held-out
    loss. Each result's training_time is the fleet's wall time divided by K (compilation
    included). ``use_compile`` None means: on a GPU only (on 2 CPU cores torch.compile did not
    make the step faster). ``progress`` follows the first shard.

    On a CPU the members are split into ``shards`` (default: one per thread torch computes
    with) that step side by side, each in its own thread, computing single-threaded with
    denormal floats flushed to zero. Why: on 2 cores two single-threaded shards beat one
    two-threaded fleet by 5-9% (no thread hand-offs around small ops), and flushing is per
    thread: Adam's first moments of weights whose gradient is exactly 0 (dead ReLU units) decay
    by 0.9 a step through the denormal range, where every operation on them is ~10x slower;
    unflushed, a fleet slowed by ~20% after its first thousand steps. Values below 1.2e-38
    (float32) become 0, far inside round-off. A fleet of one shard keeps the caller's threads
    and flushes in the calling thread.
    """
    if any(not supports(m.schedule) for m in members):
        raise ValueError("schedule_free runs train in the reference loop, not in a fleet")
    n = members[0].points.shape[0]
    if any(m.points.shape[0] != n for m in members):
        raise ValueError("every member of a fleet needs the same number of training points")
    device = torch.device(device)
    if use_compile is None:
        use_compile = device.type == "cuda"
    if shards is None:
        # Dynamo is not thread-safe: a compiled fleet trains as one shard.
        single = device.type != "cpu" or use_compile
        shards = 1 if single else min(torch.get_num_threads(), len(members))
    size = math.ceil(len(members) / shards)
    groups = [(lo, members[lo : lo + size]) for lo in range(0, len(members), size)]

    def train(offset: int, group: list[Member], report: Progress | None) -> list[TrainResult]:
        def heldout(k: int, model: Denoiser) -> float:
            assert heldout_loss is not None
            return heldout_loss(offset + k, model)

        watch = heldout if heldout_loss is not None else None
        models = initial[offset : offset + len(group)]
        return _train_shard(group, models, settings, device, watch, report, use_compile, stop)

    # Built here, not in the shards: seeding a model's initialization uses torch's global RNG.
    initial = [build_model(settings, m.seed) for m in members]
    stop = threading.Event()
    start = time.perf_counter()
    if len(groups) == 1:
        with _calling_thread(device, threads=torch.get_num_threads()):
            results = train(0, members, progress)
    else:
        with ThreadPoolExecutor(len(groups) - 1) as pool, _calling_thread(device, threads=1):
            others = [
                pool.submit(_in_shard_thread, stop, train, lo, g, None) for lo, g in groups[1:]
            ]
            try:
                results = train(0, groups[0][1], progress)
            except BaseException:
                stop.set()
                for future in others:  # a shard's own error says more than that it was stopped
                    error = future.exception()
                    if error is not None and not isinstance(error, ShardStoppedError):
                        raise error from None
                raise
            for future in others:
                results += future.result()
    training_time = (time.perf_counter() - start) / len(members)
    return [dataclasses.replace(r, training_time=training_time) for r in results]


class ShardStoppedError(RuntimeError):
    """Another shard of the fleet failed, so this one stopped."""


def _in_shard_thread(
    stop: threading.Event, train: Callable[..., list[TrainResult]], *args: object
) -> list[TrainResult]:
    torch.set_num_threads(1)  # this thread's own setting; the thread ends with the shard
    torch.set_flush_denormal(True)
    try:
        return train(*args)
    except BaseException:
        stop.set()
        raise


@contextmanager
def _calling_thread(device: torch.device, threads: int) -> Iterator[None]:
    """The calling thread trains with ``threads`` threads, flushing denormals on a CPU (its
    own: a single two-threaded shard flushes in one of its two); restored after."""
    before = torch.get_num_threads()
    flush = device.type == "cpu"
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(before)


def _train_shard(
    members: list[Member],
    initial: list[Denoiser],
    settings: TrainSettings,
    device: torch.device,
    heldout_loss: Callable[[int, Denoiser], float] | None,
    progress: Progress | None,
    use_compile: bool,
    stop: threading.Event,
) -> list[TrainResult]:
    """One shard's training loop: every member (from its ``initial`` model) on one fleet."""
    k_runs = len(members)
    n = members[0].points.shape[0]
    dtype = settings.torch_dtype
    template = copy.deepcopy(initial[0])
    fleet = FleetDenoiser(initial, device)
    optimizer = FleetAdamW(fleet.weights, fleet.grad, weight_decay=settings.weight_decay)
    ema = TensorEMA([fleet.weights], settings.ema_beta, settings.ema_every, settings.ema_warmup)
    noise = noise_schedule(settings).to(device)
    drivers = [stand_in_driver(m.lr, m.schedule, settings.steps) for m in members]
    data = torch.stack([torch.as_tensor(m.points, dtype=dtype) for m in members]).to(device)
    draws = [epoch_draws(n, settings, m.seed, dtype) for m in members]
    bounds = batch_bounds(n, settings.batch_size)
    losses = np.full((settings.steps, k_runs), np.nan)
    lrs = np.full((settings.steps, k_runs), np.nan)
    diverged_at: list[int | None] = [None] * k_runs

    losses_and_gradients = LossesAndGradients(fleet, use_compile)

    def watched(k: int) -> Callable[[], float] | None:
        if heldout_loss is None or not drivers[k].watches_heldout:
            return None
        return lambda: heldout_loss(k, fleet.member(k, template))

    step = 0
    while step < settings.steps:
        perm, t_all, eps_all = (
            torch.stack(x).to(device) for x in zip(*(next(d) for d in draws), strict=True)
        )
        x_all = torch.gather(data, 1, perm.unsqueeze(-1).expand(-1, -1, 2))
        for lo, hi in bounds:
            if step >= settings.steps:
                break
            if stop.is_set():
                raise ShardStoppedError("another shard of the fleet failed")
            run_losses = losses_and_gradients(
                x_all[:, lo:hi],
                t_all[:, lo:hi],
                eps_all[:, lo:hi],
                noise.sqrt_abar,
                noise.sqrt_one_minus_abar,
            )
            clip_coef = clip_coefficients(fleet.grad, settings.clip)
            lr = [d.lr for d in drivers]
            values = run_losses.cpu().tolist()
            for k, value in enumerate(values):
                if diverged_at[k] is None and not math.isfinite(value):
                    diverged_at[k] = step  # frozen from here on: LR 0, no more updates
            active = [d is None for d in diverged_at]
            losses[step], lrs[step] = values, lr
            optimizer.step([x if a else 0.0 for x, a in zip(lr, active, strict=True)], clip_coef)
            for k in range(k_runs):
                if active[k]:
                    drivers[k].step(values[k], watched(k))
            ema.update(step)
            step += 1
            if progress is not None and step % PROGRESS_EVERY == 0:
                alive = [v for v, a in zip(values, active, strict=True) if a]
                progress(step, float(np.mean(alive)) if alive else math.nan, max(lr))
    results = []
    for k in range(k_runs):
        done = settings.steps if diverged_at[k] is None else diverged_at[k] + 1
        model = fleet.member(k, copy.deepcopy(template)).cpu()
        ema_model = fleet.member(k, copy.deepcopy(template), ema.averages[0]).cpu()
        results.append(
            TrainResult(
                model,
                ema_model,
                losses[:done, k].copy(),
                lrs[:done, k].copy(),
                math.nan,  # train_fleet sets the fleet's time per run
                diverged_at[k],
            )
        )
    return results
