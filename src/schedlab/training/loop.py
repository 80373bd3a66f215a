"""The reference engine: one run, a plain PyTorch loop, exactly the reference's training recipe.

nn.Module, torch.optim.AdamW (torch defaults, lr from the settings), epoch-shuffled batches,
clip_grad_norm_, the LR scheduler stepped after every optimizer step, then the EMA update. It is
the readable statement of what a run is, and the oracle other engines are tested against.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from schedlab.averaging.plan import PosthocPlan, Snapshot
from schedlab.averaging.tracking import PowerEMA
from schedlab.config.settings import TrainSettings
from schedlab.model.diffusion import noise_prediction_loss
from schedlab.model.registry import ModelSpec
from schedlab.schedules.driver import LRDriver
from schedlab.schedules.registry import ScheduleSpec
from schedlab.training.common import (
    PROGRESS_EVERY,
    Progress,
    TrainResult,
    batches,
    build_model,
    curve_due,
    noise_schedule,
)
from schedlab.training.ema import EMA
from schedlab.training.optim import build_optimizer, evaluation_weights, finish_training


def train_reference(
    points: np.ndarray,
    schedule: ScheduleSpec,
    settings: TrainSettings,
    seed: int,
    heldout_loss: Callable[[nn.Module], float] | None = None,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
    posthoc: PosthocPlan | None = None,
    model_spec: ModelSpec | None = None,
) -> TrainResult:
    """Train one run of ``model_spec`` (None: the settings' mlp) on ``points`` [n, *shape].
    ``heldout_loss`` feeds a plateau schedule that watches the held-out loss, and measures the
    EMA weights for the held-out curve (its time is not counted in the training time).

    The returned models are on the CPU, whatever ``device`` trained them. With ``posthoc`` it
    tracks those power-function EMAs and returns their snapshots.
    """
    model = build_model(settings, seed, points.shape[-1], model_spec).to(device)
    noise = noise_schedule(settings).to(device)
    data = torch.as_tensor(points, dtype=settings.torch_dtype).to(device)
    optimizer = build_optimizer(model.parameters(), schedule, settings.lr, settings.weight_decay)
    driver = LRDriver(optimizer, schedule, settings.steps)
    ema = EMA(model, settings.ema_beta, settings.ema_every, settings.ema_warmup)
    power = PowerEMA(list(model.parameters()), posthoc) if posthoc is not None else None
    snapshots: list[Snapshot] = []

    def watched() -> float:
        assert heldout_loss is not None
        with evaluation_weights(optimizer):
            return heldout_loss(copy.deepcopy(model).cpu())

    mixed = settings.precision == "bf16-mixed"  # autocast: bfloat16 matmuls, float32 weights
    losses = np.empty(settings.steps, dtype=np.float64)
    lrs = np.empty(settings.steps, dtype=np.float64)
    diverged_at = None
    curve: list[tuple[int, float]] = []
    measuring = 0.0  # seconds spent on the held-out curve, taken out of the training time
    model.train()
    start = time.perf_counter()
    for step, batch in zip(range(settings.steps), batches(data, settings, seed), strict=False):
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=mixed):
            loss = noise_prediction_loss(model, noise, batch.x0, batch.t, batch.eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
        lrs[step] = driver.lr
        optimizer.step()
        value = loss.item()
        losses[step] = value
        if settings.diverged(value, losses[0]):
            diverged_at = step
            break
        driver.step(value, watched if heldout_loss is not None else None)
        if step % settings.ema_every == 0:
            with evaluation_weights(optimizer):
                ema.update(step)
        if power is not None:
            with evaluation_weights(optimizer):
                power.update(step + 1)
            if power.due(step + 1):
                for std, averages in zip(power.plan.stds, power.averages, strict=True):
                    flat = torch.cat([a.detach().cpu().flatten() for a in averages]).numpy()
                    snapshots.append(Snapshot(std, step + 1, flat))
        if heldout_loss is not None and curve_due(step + 1, settings):
            began = time.perf_counter()
            curve.append((step + 1, heldout_loss(copy.deepcopy(ema.ema_model).cpu())))
            measuring += time.perf_counter() - began
        if progress is not None and (step + 1) % PROGRESS_EVERY == 0:
            progress(step + 1, value, lrs[step])
    training_time = time.perf_counter() - start - measuring
    finish_training(optimizer)
    done = settings.steps if diverged_at is None else diverged_at + 1
    return TrainResult(
        model.cpu(),
        ema.ema_model.cpu(),
        losses[:done],
        lrs[:done],
        training_time,
        diverged_at,
        np.array(curve, dtype=np.float64).reshape(-1, 2),
        snapshots=snapshots if diverged_at is None else [],
    )
