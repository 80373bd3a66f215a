"""One run from start to finish: data, training, evaluation, sampling, KL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from schedlab import data
from schedlab.metrics import HeldoutLoss, KLReference, reference_eval_loss, timed_sample
from schedlab.schedules import ScheduleSpec
from schedlab.settings import Settings
from schedlab.train import Progress, noise_schedule, train_reference

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


def kl_floor(dataset: str, reference: KLReference, m: int) -> float:
    """The estimator's bias for this dataset: a fresh real sample of m points scored as if
    generated. A perfect model scores about this, not 0."""
    return reference.kl(data.load_heldout(dataset, m))


def run_one(
    dataset: str,
    schedule: ScheduleSpec,
    seed: int,
    settings: Settings,
    progress: Progress | None = None,
) -> RunOutcome:
    dtype = settings.train.torch_dtype
    points = data.load(dataset, settings.data.n)
    noise = noise_schedule(settings.train)
    heldout = HeldoutLoss(data.load_heldout(dataset, settings.eval.heldout), noise, dtype)
    result = train_reference(points, schedule, settings.train, seed, heldout, progress)
    metrics = dict.fromkeys(METRIC_KEYS, float("nan"))
    metrics["training_time"] = result.training_time
    if result.diverged_at is not None:
        return RunOutcome(
            "diverged",
            metrics,
            result.losses,
            result.lrs,
            None,
            result.diverged_at,
            [f"loss became {result.losses[-1]} at step {result.diverged_at}"],
        )
    notes: list[str] = []
    if settings.eval.reference_eval_loss:
        metrics["eval_loss"] = reference_eval_loss(
            result.model,
            noise,
            torch.as_tensor(points, dtype=dtype),
            settings.train.batch_size,
            seed,
        )
    metrics["eval_loss_heldout"] = heldout(result.model)
    metrics["eval_loss_heldout_ema"] = heldout(result.ema_model)
    samples, metrics["inference_time"] = timed_sample(
        result.ema_model, noise, settings.eval.samples, seed, dtype, settings.eval.sample_chunk
    )
    reference = KLReference(points)
    try:
        metrics["kl_divergence"] = reference.kl(samples)
    except ValueError as err:
        notes.append(f"kl_divergence not measured: {err}")
    metrics["kl_floor"] = kl_floor(dataset, reference, settings.eval.samples)
    return RunOutcome("done", metrics, result.losses, result.lrs, samples, None, notes)
