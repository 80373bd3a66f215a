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
import math
import time
import warnings
from collections.abc import Callable
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
) -> list[TrainResult]:
    """Train every member for ``settings.steps`` steps; one TrainResult per member.

    ``heldout_loss(k, model)`` feeds member k's plateau schedule when it watches the held-out
    loss. Each result's training_time is the fleet loop's wall time divided by K (compilation
    included). ``use_compile`` None means: on a GPU only (on 2 CPU cores torch.compile made the
    step ~5% faster for ~22 s of compilation per fleet shape, which does not pay).
    """
    k_runs = len(members)
    if any(not supports(m.schedule) for m in members):
        raise ValueError("schedule_free runs train in the reference loop, not in a fleet")
    n = members[0].points.shape[0]
    if any(m.points.shape[0] != n for m in members):
        raise ValueError("every member of a fleet needs the same number of training points")
    dtype, device = settings.torch_dtype, torch.device(device)
    if use_compile is None:
        use_compile = device.type == "cuda"
    template = build_model(settings, 0)
    fleet = FleetDenoiser([build_model(settings, m.seed) for m in members], device)
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

    start = time.perf_counter()
    step = 0
    while step < settings.steps:
        perm, t_all, eps_all = (
            torch.stack(x).to(device) for x in zip(*(next(d) for d in draws), strict=True)
        )
        x_all = torch.gather(data, 1, perm.unsqueeze(-1).expand(-1, -1, 2))
        for lo, hi in bounds:
            if step >= settings.steps:
                break
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
    training_time = (time.perf_counter() - start) / k_runs
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
                training_time,
                diverged_at[k],
            )
        )
    return results
