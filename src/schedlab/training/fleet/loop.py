"""One fleet's training loop: every member steps together, each remaining its own run.

Each member keeps everything that makes it its own run: its dataset, its seed's initial weights,
data order, timesteps and noise (the reference loop's draws, so paired seeds hold across
engines), its own torch LR scheduler (ReduceLROnPlateau fed with its own loss), its AdamW state,
its gradient clipping by its own norm, its EMA (and post-hoc EMAs with their snapshots, when
tracked), and its divergence: a member whose loss turns NaN/inf is frozen and recorded as
diverged while the others go on. What the members share is the step: every matmul is batched
over the K axis, so one fleet step costs K runs' arithmetic but only one run's worth of Python,
dispatch and kernel launches. Nothing is read back from the device per step: LRs, losses and
divergence live in the shard's ``FleetLedger``, which the host reads every few steps.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from schedlab.averaging.plan import PosthocPlan, Snapshot
from schedlab.averaging.tracking import PowerEMA
from schedlab.config.settings import TrainSettings
from schedlab.model.denoiser import weights_vector
from schedlab.schedules.driver import LRDriver
from schedlab.schedules.registry import ScheduleSpec
from schedlab.training.checkpoint import ROWS, Checkpoint, CheckpointPolicy, SaveCheckpoint
from schedlab.training.common import (
    PROGRESS_EVERY,
    EpochDraws,
    Member,
    Progress,
    TrainResult,
    batch_bounds,
    curve_due,
    noise_schedule,
)
from schedlab.training.ema import TensorEMA
from schedlab.training.fleet.autodiff import FleetModel, fleet_of
from schedlab.training.fleet.compiled import CompiledOrEager
from schedlab.training.fleet.ledger import FleetLedger
from schedlab.training.fleet.optimizer import FleetAdamW, clip_coefficients
from schedlab.training.stopping import STOP, StopRequested

# (member index, first step, losses, LRs of the steps from there): a live view of the curves.
Curves = Callable[[int, int, np.ndarray, np.ndarray], None]
LOG_EVERY = 50  # steps between the curves' live updates


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


@dataclass
class ShardJob:
    """What a shard trains and how: its members, where each starts, where checkpoints go."""

    members: list[Member]
    initial: list[nn.Module]
    resume: list[Checkpoint | None]  # each member's checkpoint (one step for all), or None
    save: SaveCheckpoint | None = None  # (index among the members, checkpoint)
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    fleet_size: int = 1  # runs in the whole fleet: a member's share of the fleet's time
    posthoc: PosthocPlan | None = None  # the power-function EMAs each member tracks
    curves: Curves | None = None  # told each member's new losses and LRs as they are read


def train_shard(
    job: ShardJob,
    settings: TrainSettings,
    device: torch.device,
    heldout_loss: Callable[[int, nn.Module], float] | None,
    progress: Progress | None,
    use_compile: bool,
    stop: threading.Event,
) -> tuple[list[TrainResult], float]:
    """One shard's training loop: every member (from its ``initial`` model, or from its
    checkpoint) on one fleet.

    ``heldout_loss(k, model)`` also measures member k's EMA weights for its held-out curve.
    Returns the results and the seconds the curves took (not training time). A stop request
    (``stopping.STOP``) checkpoints every member at the next step boundary, then raises
    ``StopRequested``.
    """
    members = job.members
    k_runs = len(members)
    n, shape = members[0].points.shape[0], tuple(members[0].points.shape[1:])
    dtype = settings.torch_dtype
    template = copy.deepcopy(job.initial[0])
    mixed = settings.precision == "bf16-mixed"
    fleet = fleet_of(job.initial, device, torch.bfloat16 if mixed else None)
    # bf16-mixed: the GEMMs run on a bfloat16 copy of the weights, refreshed every step; the
    # gradients come back to float32 for clipping, AdamW and the EMA, which stay float32.
    bf16 = [copy.deepcopy(m).to(torch.bfloat16) for m in job.initial] if mixed else []
    compute = fleet_of(bf16, device) if mixed else fleet
    compute_dtype = torch.bfloat16 if mixed else dtype
    optimizer = FleetAdamW(
        fleet.weights,
        fleet.grad,
        weight_decay=settings.weight_decay,
        one_pass=device.type == "cuda",
        use_compile=use_compile,
    )
    ema = TensorEMA([fleet.weights], settings.ema_beta, settings.ema_every, settings.ema_warmup)
    power = PowerEMA([fleet.weights], job.posthoc) if job.posthoc is not None else None
    snapshots: list[list[Snapshot]] = [[] for _ in members]
    noise = noise_schedule(settings).to(device)
    sqrt_abar = noise.sqrt_abar.to(compute_dtype)
    sqrt_one_minus_abar = noise.sqrt_one_minus_abar.to(compute_dtype)
    drivers = [stand_in_driver(m.lr, m.schedule, settings.steps) for m in members]
    data = torch.stack([torch.as_tensor(m.points, dtype=dtype) for m in members]).to(device)
    draws = [EpochDraws(n, shape, settings, m.seed, dtype) for m in members]
    bounds = batch_bounds(n, settings.batch_size)
    losses = np.full((settings.steps, k_runs), np.nan)
    lrs = np.full((settings.steps, k_runs), np.nan)
    diverged_at: list[int | None] = [None] * k_runs
    curves: list[list[tuple[int, float]]] = [[] for _ in members]
    looks: list[list[float]] = [[] for _ in members]
    prior_time = [0.0] * k_runs
    step = resume_members(job.resume, fleet, optimizer, ema, drivers, draws, power)
    resumed_from = step
    for k, checkpoint in enumerate(job.resume):
        if checkpoint is not None:
            losses[:step, k], lrs[:step, k] = checkpoint.losses, checkpoint.lrs
            diverged_at[k] = checkpoint.diverged_at
            curves[k] = [(int(s), float(v)) for s, v in checkpoint.curve]
            looks[k] = checkpoint.looks.tolist()
            prior_time[k] = checkpoint.training_time
            snapshots[k] = list(checkpoint.snapshots)
    measuring = 0.0
    start = last_save = time.perf_counter()

    losses_and_gradients = CompiledOrEager(compute.losses_and_gradients, use_compile)

    ledger = FleetLedger(members, drivers, settings, device, losses, lrs, diverged_at, step)
    logged = step  # steps whose curves ``job.curves`` has been told

    def tell_curves() -> None:
        nonlocal logged
        if job.curves is None or logged == step:
            return
        for k in range(k_runs):
            end = step if diverged_at[k] is None else min(step, diverged_at[k] + 1)
            if end > logged:
                job.curves(k, logged, losses[logged:end, k].copy(), lrs[logged:end, k].copy())
        logged = step

    def watched(k: int) -> Callable[[], float] | None:
        if heldout_loss is None or not drivers[k].watches_heldout:
            return None

        def look() -> float:
            value = heldout_loss(k, fleet.member(k, template))
            looks[k].append(value)
            return value

        return look

    def checkpoint_all() -> None:
        assert job.save is not None
        ledger.read(step, watched)
        share = (time.perf_counter() - start - measuring) / job.fleet_size
        for k in range(k_runs):
            job.save(k, member_checkpoint(k, share + prior_time[k]))

    def member_checkpoint(k: int, seconds: float) -> Checkpoint:
        # The streams' states before the epoch of the next step: that epoch is drawn again on
        # resume. It is the one last drawn, or (at an epoch's end) the one after it.
        this_epoch = epoch_first == step - step % len(bounds)
        order, stream = draws[k].epoch_start if this_epoch else draws[k].states()
        rows = (fleet.weights, optimizer.exp_avg, optimizer.exp_avg_sq, ema.averages[0])
        named = dict(zip(ROWS, rows, strict=True))
        if power is not None:
            named.update({posthoc_row(i): a[0] for i, a in enumerate(power.averages)})
        return Checkpoint(
            step=step,
            rows={name: r[k].cpu().numpy().copy() for name, r in named.items()},
            losses=losses[:step, k].copy(),
            lrs=lrs[:step, k].copy(),
            curve=np.array(curves[k], dtype=np.float64).reshape(-1, 2),
            looks=np.array(looks[k], dtype=np.float64),
            diverged_at=diverged_at[k],
            training_time=seconds,
            order_state=order.numpy().copy(),
            noise_state=stream.numpy().copy(),
            snapshots=tuple(snapshots[k]),
        )

    skip = step % len(bounds)  # batches of the current epoch already trained on
    epoch_first = step - skip
    while step < settings.steps:
        perm, t_all, eps_all = (  # [K, n], [K, n], [K, n, *s]
            torch.stack(x).to(device) for x in zip(*(next(d) for d in draws), strict=True)
        )
        epoch_first = step - skip  # the step this epoch's first batch trains
        flat = data.flatten(2)  # [K, n, prod(s)]
        x_all = torch.gather(flat, 1, perm.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))
        x_all = x_all.view(data.shape)  # [K, n, *s]
        x_all, eps_all = x_all.to(compute_dtype), eps_all.to(compute_dtype)
        for lo, hi in bounds[skip:]:
            if step >= settings.steps:
                break
            if STOP.is_set():  # SIGINT or SIGTERM: checkpoint, then stop
                if job.save is not None:
                    checkpoint_all()
                raise StopRequested
            if stop.is_set():
                raise ShardStoppedError("another shard of the fleet failed")
            if mixed:
                compute.weights.copy_(fleet.weights)
            run_losses = losses_and_gradients(  # [K]
                x_all[:, lo:hi],
                t_all[:, lo:hi],
                eps_all[:, lo:hi],
                sqrt_abar,
                sqrt_one_minus_abar,
            )
            if mixed:
                fleet.grad.copy_(compute.grad)
            clip_coef = clip_coefficients(fleet.grad, settings.clip)  # [K]
            optimizer.step(ledger.record(step, run_losses), clip_coef)
            ema.update(step)
            step += 1
            if power is not None:
                power.update(step)
            snapshot = power is not None and power.due(step)
            curve = heldout_loss is not None and curve_due(step, settings)
            report = progress is not None and step % PROGRESS_EVERY == 0
            live = job.curves is not None and step % LOG_EVERY == 0
            if ledger.due(step) or snapshot or curve or report or live:
                ledger.read(step, watched)
            if live:
                tell_curves()
            active = ledger.active()
            if snapshot:
                assert power is not None
                take_snapshots(power, fleet, template, active, step, snapshots)
            if curve:
                began = time.perf_counter()
                for k in range(k_runs):
                    if active[k]:
                        ema_model = fleet.member(k, template, ema.averages[0])
                        curves[k].append((step, heldout_loss(k, ema_model)))
                measuring += time.perf_counter() - began
            if report:
                assert progress is not None
                alive = [k for k in range(k_runs) if active[k]]
                mean = float(np.mean(losses[step - 1, alive])) if alive else math.nan
                progress(step, mean, float(lrs[step - 1, alive].max(initial=0.0)))
            since = time.perf_counter() - last_save
            if job.save is not None and step < settings.steps and job.policy.due(step, since):
                checkpoint_all()
                last_save = time.perf_counter()
        skip = 0
    ledger.read(step, watched)
    tell_curves()
    if job.save is not None and resumed_from < settings.steps:
        checkpoint_all()  # trained: an interrupt while measuring retrains nothing
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
                prior_time[k],  # train_fleet adds this fleet's time per run
                diverged_at[k],
                np.array(curves[k], dtype=np.float64).reshape(-1, 2),
                resumed_from,
                snapshots[k] if diverged_at[k] is None else [],
            )
        )
    return results, measuring


def posthoc_row(profile: int) -> str:
    """A checkpoint's name for the row of tracked post-hoc EMA ``profile``."""
    return f"posthoc_{profile}"


def take_snapshots(
    power: PowerEMA,
    fleet: FleetModel,
    template: nn.Module,
    active: list[bool],
    step: int,
    snapshots: list[list[Snapshot]],
) -> None:
    """Each active member's tracked EMAs after ``step`` steps, as flat weight vectors."""
    for std, (average,) in zip(power.plan.stds, power.averages, strict=True):
        for k, alive in enumerate(active):
            if alive:
                member = fleet.member(k, template, average)
                snapshots[k].append(Snapshot(std, step, weights_vector(member).copy()))


def resume_members(
    resume: list[Checkpoint | None],
    fleet: FleetModel,
    optimizer: FleetAdamW,
    ema: TensorEMA,
    drivers: list[LRDriver],
    draws: list[EpochDraws],
    power: PowerEMA | None = None,
) -> int:
    """Load each member's checkpoint into the fleet; the step they all resume at (0: none;
    ``train_fleet`` checks that it is one step). Each schedule is stepped again through the
    recorded losses and looks."""
    step = resume[0].step if resume[0] is not None else 0
    rows = (fleet.weights, optimizer.exp_avg, optimizer.exp_avg_sq, ema.averages[0])
    with torch.no_grad():
        for k, checkpoint in enumerate(resume):
            if checkpoint is None:
                continue
            for name, row in zip(ROWS, rows, strict=True):
                row[k].copy_(torch.from_numpy(checkpoint.rows[name]))
            for i, (average,) in enumerate(power.averages if power is not None else []):
                average[k].copy_(torch.from_numpy(checkpoint.rows[posthoc_row(i)]))
            replay_schedule(drivers[k], checkpoint)
            draws[k].restore(checkpoint.stream_states())
        optimizer.step_count.fill_(float(step))
    return step


def replay_schedule(driver: LRDriver, checkpoint: Checkpoint) -> None:
    """Step a fresh schedule as the member's was stepped: after every step it trained (not
    the step it diverged at), with the same losses and held-out looks."""
    looks = iter(checkpoint.looks.tolist())
    stepped = checkpoint.step if checkpoint.diverged_at is None else checkpoint.diverged_at
    for value in checkpoint.losses[:stepped].tolist():
        driver.step(value, (lambda: next(looks)) if driver.watches_heldout else None)
