"""The reference engine: one run, a plain PyTorch loop, exactly the reference's training recipe.

nn.Module, torch.optim.AdamW (torch defaults, lr from the settings), epoch-shuffled batches,
clip_grad_norm_, the LR scheduler stepped after every optimizer step, then the EMA update. It is
the readable statement of what a run is, and the oracle other engines are tested against.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from schedlab.diffusion import NoiseSchedule, noise_prediction_loss
from schedlab.ema import EMA
from schedlab.model import Denoiser
from schedlab.optim import build_optimizer, evaluation_weights, finish_training
from schedlab.schedules import LRDriver, ScheduleSpec
from schedlab.seeding import generator, stream_seed
from schedlab.settings import TrainSettings

# (step, loss, lr), called every PROGRESS_EVERY steps and at the end.
Progress = Callable[[int, float, float], None]
PROGRESS_EVERY = 50


@dataclass
class TrainResult:
    model: Denoiser
    ema_model: Denoiser
    losses: np.ndarray  # training loss of each completed step
    lrs: np.ndarray  # LR the optimizer used at each completed step
    training_time: float  # seconds of the training loop alone
    diverged_at: int | None  # first step whose loss was NaN/inf


def build_model(settings: TrainSettings, seed: int) -> Denoiser:
    """The initial weights of seed ``seed``, independent of the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, "init"))
        model = Denoiser(settings.emb_size, settings.hidden_size, settings.hidden_layers)
    return model.to(settings.torch_dtype)


def noise_schedule(settings: TrainSettings) -> NoiseSchedule:
    return NoiseSchedule(
        settings.timesteps, beta_schedule=settings.beta_schedule, dtype=settings.torch_dtype
    )


@dataclass
class Batch:
    x0: torch.Tensor
    t: torch.Tensor
    eps: torch.Tensor


def epoch_draws(
    n: int, settings: TrainSettings, seed: int, dtype: torch.dtype
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Each epoch's (permutation, timesteps, noise) of a run: one timestep and noise per point
    position, from the run's noise stream; the order from its order stream. Both depend on the
    seed alone, and every engine draws them here."""
    order, noise = generator(seed, "order"), generator(seed, "noise")
    while True:
        perm = torch.randperm(n, generator=order)
        t = torch.randint(0, settings.timesteps, (n,), generator=noise)
        eps = torch.randn(n, 2, generator=noise, dtype=dtype)
        yield perm, t, eps


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """An epoch's batches: full ones, then a partial last one (torch's DataLoader default)."""
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def batches(points: torch.Tensor, settings: TrainSettings, seed: int) -> Iterator[Batch]:
    """The run's batches, epoch after epoch, on the device of ``points``."""
    bounds = batch_bounds(points.shape[0], settings.batch_size)
    for draws in epoch_draws(points.shape[0], settings, seed, points.dtype):
        perm, t, eps = (x.to(points.device) for x in draws)
        for start, stop in bounds:
            yield Batch(points[perm[start:stop]], t[start:stop], eps[start:stop])


def train_reference(
    points: np.ndarray,
    schedule: ScheduleSpec,
    settings: TrainSettings,
    seed: int,
    heldout_loss: Callable[[Denoiser], float] | None = None,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train one run. ``heldout_loss`` feeds a plateau schedule that watches the held-out loss.

    The returned models are on the CPU, whatever ``device`` trained them.
    """
    model = build_model(settings, seed).to(device)
    noise = noise_schedule(settings).to(device)
    data = torch.as_tensor(points, dtype=settings.torch_dtype).to(device)
    optimizer = build_optimizer(model.parameters(), schedule, settings.lr, settings.weight_decay)
    driver = LRDriver(optimizer, schedule, settings.steps)
    ema = EMA(model, settings.ema_beta, settings.ema_every, settings.ema_warmup)

    def watched() -> float:
        assert heldout_loss is not None
        with evaluation_weights(optimizer):
            return heldout_loss(copy.deepcopy(model).cpu())

    losses = np.empty(settings.steps, dtype=np.float64)
    lrs = np.empty(settings.steps, dtype=np.float64)
    diverged_at = None
    model.train()
    start = time.perf_counter()
    for step, batch in zip(range(settings.steps), batches(data, settings, seed), strict=False):
        loss = noise_prediction_loss(model, noise, batch.x0, batch.t, batch.eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
        lrs[step] = driver.lr
        optimizer.step()
        value = loss.item()
        losses[step] = value
        if not math.isfinite(value):
            diverged_at = step
            break
        driver.step(value, watched if heldout_loss is not None else None)
        if step % settings.ema_every == 0:
            with evaluation_weights(optimizer):
                ema.update(step)
        if progress is not None and (step + 1) % PROGRESS_EVERY == 0:
            progress(step + 1, value, lrs[step])
    training_time = time.perf_counter() - start
    finish_training(optimizer)
    done = settings.steps if diverged_at is None else diverged_at + 1
    return TrainResult(
        model.cpu(), ema.ema_model.cpu(), losses[:done], lrs[:done], training_time, diverged_at
    )
