"""One run from start to finish: data, training, evaluation, sampling, KL.

A ``Workload`` (AlgoPerf's word) is what runs on one dataset share: the training points, the
held-out loss with its fixed draws, the KL reference and its bias floor. It is built once per
dataset and settings and reused by every schedule and seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import torch

from schedlab import data
from schedlab.diffusion import NoiseSchedule
from schedlab.engine import Member, supports, train_fleet
from schedlab.metrics import HeldoutLoss, KLReference, reference_eval_loss, timed_sample
from schedlab.schedules import ScheduleSpec
from schedlab.settings import Settings
from schedlab.train import Progress, TrainResult, noise_schedule, train_reference

METRIC_KEYS = (
    "training_time",
    "eval_loss",
    "eval_loss_heldout",
    "eval_loss_heldout_ema",
    "inference_time",
    "kl_divergence",
    "kl_floor",
)


@dataclass
class RunOutcome:
    status: Literal["done", "diverged"]
    metrics: dict[str, float]  # every key of METRIC_KEYS; NaN where not measured
    losses: np.ndarray
    lrs: np.ndarray
    samples: np.ndarray | None
    diverged_at: int | None = None
    notes: list[str] = field(default_factory=list)


class Workload:
    """A dataset at given settings, with everything evaluation needs computed once."""

    def __init__(self, dataset: str, settings: Settings) -> None:
        self.dataset = dataset
        self.settings = settings
        self.dtype = settings.train.torch_dtype
        self.points = data.load(dataset, settings.data.n)
        self.noise: NoiseSchedule = noise_schedule(settings.train)
        self.heldout = HeldoutLoss(
            data.load_heldout(dataset, settings.eval.heldout), self.noise, self.dtype
        )

    @cached_property
    def kl_reference(self) -> KLReference:
        return KLReference(self.points)

    @cached_property
    def kl_floor(self) -> float:
        """The estimator's bias here: a fresh real sample scored as if generated. A perfect
        model scores about this, not 0."""
        return self.kl_reference.kl(data.load_heldout(self.dataset, self.settings.eval.samples))

    @staticmethod
    def key(dataset: str, settings: Settings) -> tuple:
        """Settings that change a workload (not the schedule, LR or step count)."""
        t = settings.train
        return (dataset, settings.data, settings.eval, t.dtype, t.timesteps, t.beta_schedule)


def run_one(
    workload: Workload,
    schedule: ScheduleSpec,
    seed: int,
    settings: Settings,
    progress: Progress | None = None,
    engine: Literal["loop", "fleet"] = "loop",
) -> RunOutcome:
    """Train one run (a fleet of one, or the reference loop), then evaluate it.

    Schedule-free runs always train in the loop.
    """
    if engine == "fleet" and supports(schedule):
        member = Member(workload.points, schedule, seed, settings.train.lr)
        (result,) = train_fleet(
            [member], settings.train, "cpu", lambda k, model: workload.heldout(model), progress
        )
    else:
        result = train_reference(
            workload.points, schedule, settings.train, seed, workload.heldout, progress
        )
    return evaluate(workload, result, seed, settings)


def evaluate(workload: Workload, result: TrainResult, seed: int, settings: Settings) -> RunOutcome:
    """Every metric of a trained run (whichever engine trained it)."""
    metrics = dict.fromkeys(METRIC_KEYS, float("nan"))
    metrics["training_time"] = result.training_time
    metrics["kl_floor"] = workload.kl_floor
    if result.diverged_at is not None:
        note = f"loss became {result.losses[-1]} at step {result.diverged_at}"
        return RunOutcome(
            "diverged", metrics, result.losses, result.lrs, None, result.diverged_at, [note]
        )
    notes: list[str] = []
    if settings.eval.reference_eval_loss:
        metrics["eval_loss"] = reference_eval_loss(
            result.model,
            workload.noise,
            torch.as_tensor(workload.points, dtype=workload.dtype),
            settings.train.batch_size,
            seed,
        )
    metrics["eval_loss_heldout"] = workload.heldout(result.model)
    metrics["eval_loss_heldout_ema"] = workload.heldout(result.ema_model)
    samples, metrics["inference_time"] = timed_sample(
        result.ema_model,
        workload.noise,
        settings.eval.samples,
        seed,
        workload.dtype,
        settings.eval.sample_chunk,
    )
    try:
        metrics["kl_divergence"] = workload.kl_reference.kl(samples)
    except ValueError as err:
        notes.append(f"kl_divergence not measured: {err}")
    return RunOutcome("done", metrics, result.losses, result.lrs, samples, None, notes)
