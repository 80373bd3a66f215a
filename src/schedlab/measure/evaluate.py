"""Measuring a run: each registered metric computed from what the run left behind.

A run leaves its training record, its raw and EMA weights and, once drawn, its samples. A
``MeasureContext`` serves them to the metrics' compute functions, drawing the samples (and
timing them) only when a metric asks and none are stored under the current sample key.
``evaluate`` measures a fresh training result; ``schedlab measure`` and `run` use the same
path for runs whose weights are in the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from schedlab import data
from schedlab.config.settings import Settings
from schedlab.measure.losses import reference_eval_losses
from schedlab.measure.sampling import timed_samples
from schedlab.measure.workload import Workload
from schedlab.metrics import Metric, Need, enabled


@dataclass
class Trained:
    """What training left of a run (fresh from an engine, or read back from the store)."""

    training_time: float
    model: nn.Module | None = None  # raw weights; None when not kept
    ema_model: nn.Module | None = None
    samples: tuple[np.ndarray, float] | None = None  # stored samples [m, *s], their seconds
    # Samples drawn with its fleet after training (to be stored), and their seconds per run.
    drawn: tuple[np.ndarray, float] | None = None
    eval_loss: float | None = None  # the reference eval loss, measured with its fleet


@dataclass
class Measured:
    values: dict[str, float]  # metric key -> value (NaN: could not be measured, see notes)
    samples: tuple[np.ndarray, float] | None  # newly drawn samples and their seconds
    notes: list[str] = field(default_factory=list)


class MeasureContext:
    """What a metric's compute function may ask for; everything expensive is computed once."""

    def __init__(self, workload: Workload, trained: Trained, seed: int, settings: Settings):
        self.workload, self.trained, self.seed, self.settings = workload, trained, seed, settings
        self.training_time = trained.training_time
        self.drawn: tuple[np.ndarray, float] | None = trained.drawn
        self.image_scores: dict[str, float] | None = None

    def available(self, need: Need) -> bool:
        t = self.trained
        return {
            "training": True,
            "reference": True,
            "weights": t.model is not None,
            "ema_weights": t.ema_model is not None,
            "samples": t.samples is not None or t.drawn is not None or t.ema_model is not None,
        }[need]

    def samples(self) -> tuple[np.ndarray, float]:
        """The run's samples [m, *s] from its EMA weights, and the seconds drawing them took."""
        if self.trained.samples is not None:
            return self.trained.samples
        if self.drawn is None:
            assert self.trained.ema_model is not None
            w = self.workload
            (points,), seconds = timed_samples(
                [self.trained.ema_model],
                [self.seed],
                w.noise,
                self.settings.eval.samples,
                w.dtype,
                self.settings.eval.sample_chunk,
                w.shape,
            )
            self.drawn = points, seconds
        return self.drawn

    def heldout_loss(self, ema: bool) -> float:
        model = self.trained.ema_model if ema else self.trained.model
        assert model is not None
        return self.workload.heldout(model)

    def reference_eval_loss(self) -> float:
        if self.trained.eval_loss is not None:
            return self.trained.eval_loss
        assert self.trained.model is not None
        w = self.workload
        points = torch.as_tensor(w.points, dtype=w.dtype)
        batch = self.settings.train.batch_size
        (value,) = reference_eval_losses(
            [self.trained.model], [points], [self.seed], w.noise, batch
        )
        return value

    def inference_time(self) -> float:
        return self.samples()[1]

    def kl_divergence(self) -> float:
        return self.workload.kl_reference.kl(self.samples()[0])

    def kl_floor(self) -> float:
        return self.workload.kl_floor

    def sliced_wasserstein(self, real: bool = False) -> float:
        """Of the run's samples, or (``real``) of a fresh real sample: the floor."""
        w = self.workload  # the floor is the dataset's, computed once
        return (
            w.sliced_wasserstein_floor
            if real
            else w.distances.sliced_wasserstein(self.samples()[0])
        )

    def log_density(self, real: bool = False) -> float:
        """Mean true log-density (nats) of the run's samples, or of a fresh real sample."""
        w = self.workload
        density = data.get(w.dataset).log_density
        assert density is not None  # the metric applies to datasets with a known density only
        return float(density(w.fresh_sample if real else self.samples()[0]).mean())

    def image_score(self, metric: str, real: bool = False) -> float:
        """An image metric (frechet_distance, precision, recall, class_kl) of the run's
        samples, or (``real``) of a fresh real sample: the floor."""
        w = self.workload
        if w.image_reference is None:
            raise ValueError(
                f"no features for {w.dataset}: it has no labels to train the feature network "
                'on; give [eval] features = "module:function"'
            )
        if real:
            return w.image_floors[metric]
        if self.image_scores is None:
            self.image_scores = w.image_reference.scores(self.samples()[0])
        return self.image_scores[metric]

    def feature_accuracy(self) -> float:
        reference = self.workload.image_reference
        return reference.features.accuracy if reference is not None else math.nan

    def mmd(self, real: bool = False) -> float:
        w = self.workload
        return w.mmd_floor if real else w.distances.mmd(self.samples()[0])


def evaluate(
    workload: Workload,
    trained: Trained,
    seed: int,
    settings: Settings,
    metrics: list[Metric] | None = None,
    diverged: bool = False,
) -> Measured:
    """Measure ``metrics`` (default: every one enabled under the eval settings).

    A diverged run gets only the metrics that need neither weights nor samples. A metric whose
    needs are missing (weights not stored) or whose computation refuses its input (NaN samples)
    is NaN with a note; any other error propagates and fails the run.
    """
    context = MeasureContext(workload, trained, seed, settings)
    values: dict[str, float] = {}
    notes: list[str] = []
    for metric in metrics if metrics is not None else enabled(settings.eval):
        missing = sorted(need for need in metric.needs if not context.available(need))
        if (diverged and metric.needs_model()) or not metric.applies(
            workload.dataset, workload.shape
        ):
            values[metric.key] = math.nan
        elif missing:
            values[metric.key] = math.nan
            notes.append(f"{metric.key} not measured: no stored {', '.join(missing)}")
        else:
            try:
                values[metric.key] = float(metric.compute(context))
            except ValueError as err:
                values[metric.key] = math.nan
                notes.append(f"{metric.key} not measured: {err}")
    return Measured(values, context.drawn, notes)
