"""One fleet's training loop: every member steps together, each remaining its own run.

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
import math
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from schedlab.config.settings import TrainSettings
from schedlab.model.denoiser import Denoiser
from schedlab.schedules.driver import LRDriver
from schedlab.schedules.registry import ScheduleSpec
from schedlab.training.common import (
    PROGRESS_EVERY,
    Member,
    Progress,
    TrainResult,
    batch_bounds,
    curve_due,
    epoch_draws,
    noise_schedule,
)
from schedlab.training.ema import TensorEMA
from schedlab.training.fleet.model import FleetDenoiser
from schedlab.training.fleet.optimizer import FleetAdamW, clip_coefficients


class ShardStoppedError(RuntimeError):
    """Another shard of the fleet failed, so this one stopped."""


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


def train_shard(
    members: list[Member],
    initial: list[Denoiser],
    settings: TrainSettings,
    device: torch.device,
    heldout_loss: Callable[[int, Denoiser], float] | None,
    progress: Progress | None,
    use_compile: bool,
    stop: threading.Event,
) -> tuple[list[TrainResult], float]:
    """One shard's training loop: every member (from its ``initial`` model) on one fleet.

    ``heldout_loss(k, model)`` also measures member k's EMA weights for its held-out curve.
    Returns the results and the seconds the curves took (not training time).
    """
    k_runs = len(members)
    n, dim = members[0].points.shape
    dtype = settings.torch_dtype
    template = copy.deepcopy(initial[0])
    fleet = FleetDenoiser(initial, device)
    optimizer = FleetAdamW(fleet.weights, fleet.grad, weight_decay=settings.weight_decay)
    ema = TensorEMA([fleet.weights], settings.ema_beta, settings.ema_every, settings.ema_warmup)
    noise = noise_schedule(settings).to(device)
    drivers = [stand_in_driver(m.lr, m.schedule, settings.steps) for m in members]
    data = torch.stack([torch.as_tensor(m.points, dtype=dtype) for m in members]).to(device)
    draws = [epoch_draws(n, dim, settings, m.seed, dtype) for m in members]
    bounds = batch_bounds(n, settings.batch_size)
    losses = np.full((settings.steps, k_runs), np.nan)
    lrs = np.full((settings.steps, k_runs), np.nan)
    diverged_at: list[int | None] = [None] * k_runs
    curves: list[list[tuple[int, float]]] = [[] for _ in members]
    measuring = 0.0

    losses_and_gradients = LossesAndGradients(fleet, use_compile)

    def watched(k: int) -> Callable[[], float] | None:
        if heldout_loss is None or not drivers[k].watches_heldout:
            return None
        return lambda: heldout_loss(k, fleet.member(k, template))

    step = 0
    while step < settings.steps:
        perm, t_all, eps_all = (  # [K, n], [K, n], [K, n, d]
            torch.stack(x).to(device) for x in zip(*(next(d) for d in draws), strict=True)
        )
        x_all = torch.gather(data, 1, perm.unsqueeze(-1).expand(-1, -1, dim))  # [K, n, d]
        for lo, hi in bounds:
            if step >= settings.steps:
                break
            if stop.is_set():
                raise ShardStoppedError("another shard of the fleet failed")
            run_losses = losses_and_gradients(  # [K]
                x_all[:, lo:hi],
                t_all[:, lo:hi],
                eps_all[:, lo:hi],
                noise.sqrt_abar,
                noise.sqrt_one_minus_abar,
            )
            clip_coef = clip_coefficients(fleet.grad, settings.clip)  # [K]
            lr = [d.lr for d in drivers]
            values = run_losses.cpu().tolist()
            for k, value in enumerate(values):
                first = losses[0, k] if step else value
                if diverged_at[k] is None and settings.diverged(value, first):
                    diverged_at[k] = step  # frozen from here on: LR 0, no more updates
            active = [d is None for d in diverged_at]
            losses[step], lrs[step] = values, lr
            optimizer.step([x if a else 0.0 for x, a in zip(lr, active, strict=True)], clip_coef)
            for k in range(k_runs):
                if active[k]:
                    drivers[k].step(values[k], watched(k))
            ema.update(step)
            step += 1
            if heldout_loss is not None and curve_due(step, settings):
                began = time.perf_counter()
                for k in range(k_runs):
                    if active[k]:
                        ema_model = fleet.member(k, template, ema.averages[0])
                        curves[k].append((step, heldout_loss(k, ema_model)))
                measuring += time.perf_counter() - began
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
                np.array(curves[k], dtype=np.float64).reshape(-1, 2),
            )
        )
    return results, measuring
