"""What every engine shares: a run's initial weights, its random draws, its batches, its result.

Every engine draws here, so seed i gives the same weights, data order, timesteps and noise in
the loop and in the fleet (paired seeds hold across engines).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from schedlab.averaging.plan import Snapshot
from schedlab.config.settings import TrainSettings
from schedlab.model.denoiser import Denoiser
from schedlab.model.diffusion import NoiseSchedule
from schedlab.model.registry import ModelSpec
from schedlab.schedules.registry import ScheduleSpec
from schedlab.training.seeding import generator, stream_seed

# (step, loss, lr), called every PROGRESS_EVERY steps and at the end.
Progress = Callable[[int, float, float], None]
PROGRESS_EVERY = 50


@dataclass(frozen=True)
class Member:
    points: np.ndarray  # the run's training set [n, *shape]
    schedule: ScheduleSpec
    seed: int
    lr: float  # the run's base LR
    model: ModelSpec | None = None  # None: the mlp of the settings' sizes


@dataclass
class TrainResult:
    model: nn.Module
    ema_model: nn.Module
    losses: np.ndarray  # training loss of each completed step
    lrs: np.ndarray  # LR the optimizer used at each completed step
    training_time: float  # seconds of the training loop alone
    diverged_at: int | None  # first step whose loss was NaN/inf
    # [m, 2]: (steps done, held-out loss of the EMA weights) every curve_every steps and at
    # the end; empty when no held-out loss was given.
    heldout_curve: np.ndarray
    resumed_from: int = 0  # the step it resumed at from a checkpoint (0: trained from scratch)
    snapshots: list[Snapshot] = field(default_factory=list)  # post-hoc EMA's, when tracked


def curve_due(done: int, settings: TrainSettings) -> bool:
    """Whether a held-out curve point is taken after ``done`` steps."""
    return done % settings.curve_interval == 0 or done == settings.steps


def build_model(
    settings: TrainSettings, seed: int, in_dim: int = 2, model: ModelSpec | None = None
) -> nn.Module:
    """The initial weights of seed ``seed``, independent of the global RNG: ``model``, or
    (None) the mlp of the settings' sizes for ``in_dim`` coordinates."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, "init"))
        if model is None:
            built = Denoiser(
                settings.emb_size, settings.hidden_size, settings.hidden_layers, in_dim
            )
        else:
            built = model.build()
    return built.to(settings.torch_dtype)


def member_model(member: Member, settings: TrainSettings) -> nn.Module:
    """Member's initial weights."""
    return build_model(settings, member.seed, member.points.shape[-1], member.model)


def noise_schedule(settings: TrainSettings) -> NoiseSchedule:
    return NoiseSchedule(
        settings.timesteps, beta_schedule=settings.beta_schedule, dtype=settings.torch_dtype
    )


@dataclass
class Batch:
    x0: torch.Tensor  # [B, *shape]
    t: torch.Tensor  # [B]
    eps: torch.Tensor  # [B, *shape]


class EpochDraws:
    """Each epoch's (permutation [n], timesteps [n], noise [n, *shape]) of a run: one timestep and
    noise per point position, from the run's noise stream; the order from its order stream.
    Both depend on the seed alone. ``epoch_start`` holds the streams' states before the epoch
    last drawn, from which a checkpoint draws that epoch again."""

    def __init__(
        self,
        n: int,
        shape: int | tuple[int, ...],
        settings: TrainSettings,
        seed: int,
        dtype: torch.dtype,
    ) -> None:
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.n, self.timesteps, self.dtype = n, settings.timesteps, dtype
        self.order, self.noise = generator(seed, "order"), generator(seed, "noise")
        self.epoch_start = self.states()

    def states(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.order.get_state(), self.noise.get_state()

    def restore(self, states: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Draw next the epoch that began at ``states``."""
        self.order.set_state(states[0])
        self.noise.set_state(states[1])

    def __iter__(self) -> EpochDraws:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.epoch_start = self.states()
        perm = torch.randperm(self.n, generator=self.order)
        t = torch.randint(0, self.timesteps, (self.n,), generator=self.noise)
        eps = torch.randn(self.n, *self.shape, generator=self.noise, dtype=self.dtype)
        return perm, t, eps


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """An epoch's batches: full ones, then a partial last one (torch's DataLoader default)."""
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def batches(points: torch.Tensor, settings: TrainSettings, seed: int) -> Iterator[Batch]:
    """The run's batches of ``points`` [n, *shape], epoch after epoch, on their device."""
    n, shape = points.shape[0], tuple(points.shape[1:])
    bounds = batch_bounds(n, settings.batch_size)
    for draws in EpochDraws(n, shape, settings, seed, points.dtype):
        perm, t, eps = (x.to(points.device) for x in draws)
        for start, stop in bounds:
            yield Batch(points[perm[start:stop]], t[start:stop], eps[start:stop])
