"""Every metric schedlab measures, declared once (no torch).

A metric declares its key, title, unit, which direction is better, what it needs (the
training record, the raw or EMA weights, the generated samples, the dataset's reference data),
the eval settings its value depends on, a version, and how to compute it from a
``MeasureContext`` (``schedlab.measure.evaluate``). `train --json`, `export`, the report's
tables and figures, `schedlab measure` and the synthetic test store all read this registry:
adding a metric is one ``register`` call and its function.

Measurements are stored under a *measurement key*: the metric, its version and the eval
settings it reads. Changing `[eval] samples` therefore measures again the metrics that read
it and never trains again (the run's identity holds no eval setting).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from schedlab import data

Need = Literal["training", "weights", "ema_weights", "samples", "reference", "curve", "target"]
Direction = Literal["lower", "higher"]
# Bumped when the way samples are drawn changes: stored samples then count as missing. Not
# bumped when a fleet's runs came to be sampled as one batched computation: the same noise
# through the same network, equal to the per-run sampler up to float round-off (over the
# `quick` study, KL within 1.3e-6 bits), so samples stored before stay valid.
SAMPLING_VERSION = 1


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    direction: Direction | None  # None: a property of the setup, not a score
    digits: int  # decimals in tables
    needs: frozenset[Need]
    reads: tuple[str, ...]  # the EvalSettings fields its value depends on
    # From a measure.evaluate.MeasureContext; a derived metric's from a
    # measure.targets.TargetContext (typed Any: the registry is the leaf both of them read).
    compute: Callable[[Any], float]
    version: int = 1
    table: bool = True  # a table of its own in reports
    paired: bool = False  # compared seed by seed with the baseline in reports
    floor: str | None = None  # the metric that measures what a perfect model scores
    enabled: Callable[[Any], bool] = lambda _: True  # of the study's EvalSettings
    description: str = ""  # one line for readers of a report
    # Whether it means anything for a dataset whose samples have this shape (the true
    # log-density exists for some only; the sample distances and KL are for vectors).
    applies: Callable[[str, tuple[int, ...]], bool] = lambda _dataset, _shape: True
    # Derived when a study is read (it needs the study's target), never stored.
    derived: bool = False
    # It scores the EMA weights (or their samples): a post-hoc EMA sweep can measure it.
    averaged: bool = False

    def key_for(self, settings: Any) -> str:
        """The measurement key of this metric under ``settings``."""
        used = {name: getattr(settings, name) for name in self.reads}
        return _digest({"metric": self.key, "version": self.version, "eval": used})

    @property
    def label(self) -> str:
        """The title with its unit, for tables and axes."""
        return f"{self.title} ({self.unit})" if self.unit else self.title

    def needs_model(self) -> bool:
        """True when it reads what the trained model gives (weights or samples): a diverged
        run has none of that."""
        return bool(self.needs & {"weights", "ema_weights", "samples"})


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.key in METRICS:
        raise ValueError(f"metric {metric.key!r} is registered already")
    METRICS[metric.key] = metric
    return metric


def sample_key(settings: Any) -> str:
    """The key of a run's generated samples: how many, and how they are drawn."""
    return _digest({"samples": settings.samples, "version": SAMPLING_VERSION})


def enabled(settings: Any) -> list[Metric]:
    """The metrics measured and stored under ``settings``, in registry order."""
    return [m for m in METRICS.values() if not m.derived and m.enabled(settings)]


def derived() -> list[Metric]:
    """The metrics derived when a study is read, in registry order."""
    return [m for m in METRICS.values() if m.derived]


def keys() -> list[str]:
    return list(METRICS)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def vectors(_dataset: str, shape: tuple[int, ...]) -> bool:
    """KL (kNN) and the sample distances compare points: they apply to vector data."""
    return len(shape) == 1


register(
    Metric(
        "kl_divergence",
        "KL divergence",
        "bits",
        "lower",
        3,
        frozenset({"samples", "reference"}),
        ("samples",),
        lambda ctx: ctx.kl_divergence(),
        paired=True,
        floor="kl_floor",
        description=(
            "kNN estimate (k = 5, Chebyshev) of KL(real || generated), real = the training set"
        ),
        averaged=True,
        applies=vectors,
    )
)

register(
    Metric(
        "sliced_wasserstein",
        "Sliced Wasserstein-2 distance (256 directions)",
        "",
        "lower",
        4,
        frozenset({"samples", "reference"}),
        ("samples",),
        lambda ctx: ctx.sliced_wasserstein(),
        paired=True,
        floor="sliced_wasserstein_floor",
        description=(
            "2-sliced Wasserstein distance to a fixed 20,000-point subsample of the training set, "
            "over 256 fixed directions"
        ),
        averaged=True,
        applies=vectors,
    )
)
register(
    Metric(
        "mmd",
        "MMD² (Gaussian kernel, median bandwidth, unbiased)",
        "",
        "lower",
        5,
        frozenset({"samples", "reference"}),
        ("samples",),
        lambda ctx: ctx.mmd(),
        paired=True,
        floor="mmd_floor",
        description=(
            "unbiased MMD^2, Gaussian kernel with a bandwidth fixed per dataset, 2,000 points a "
            "side"
        ),
        averaged=True,
        applies=vectors,
    )
)
register(
    Metric(
        "eval_loss",
        "Eval loss (reference: training set)",
        "",
        "lower",
        3,
        frozenset({"weights", "reference"}),
        (),
        lambda ctx: ctx.reference_eval_loss(),
        paired=True,
        enabled=lambda settings: settings.reference_eval_loss,
        description=(
            "the reference's 'eval loss': noise-prediction MSE over one pass of the training set, "
            "raw weights"
        ),
    )
)

register(
    Metric(
        "eval_loss_heldout",
        "Held-out eval loss",
        "",
        "lower",
        3,
        frozenset({"weights", "reference"}),
        ("heldout",),
        lambda ctx: ctx.heldout_loss(ema=False),
        description=(
            "noise-prediction MSE on held-out points with t and noise fixed for all runs, raw "
            "weights"
        ),
    )
)

register(
    Metric(
        "eval_loss_heldout_ema",
        "Held-out eval loss, EMA weights",
        "",
        "lower",
        3,
        frozenset({"ema_weights", "reference"}),
        ("heldout",),
        lambda ctx: ctx.heldout_loss(ema=True),
        paired=True,
        description="the held-out loss with the EMA weights (the weights that sample)",
        averaged=True,
    )
)

register(
    Metric(
        "training_time",
        "Training time",
        "s",
        "lower",
        2,
        frozenset({"training"}),
        (),
        lambda ctx: ctx.training_time,
        description="seconds of the training loop (a fleet's wall time divided by its runs)",
    )
)

register(
    Metric(
        "inference_time",
        "Inference time",
        "s",
        "lower",
        2,
        frozenset({"samples"}),
        ("samples",),
        lambda ctx: ctx.inference_time(),
        description=(
            "seconds to draw the samples through all T steps with the EMA weights: the "
            "fleet's sampling time divided by its runs when drawn together"
        ),
    )
)

register(
    Metric(
        "kl_floor",
        "KL bias floor (a fresh real sample scored as generated)",
        "bits",
        None,
        3,
        frozenset({"reference"}),
        ("samples",),
        lambda ctx: ctx.kl_floor(),
        table=False,
        description=(
            "the KL estimate of a fresh real sample: the estimator's bias, what a perfect model "
            "scores"
        ),
        applies=vectors,
    )
)


register(
    Metric(
        "sliced_wasserstein_floor",
        "Sliced Wasserstein floor (a fresh real sample scored as generated)",
        "",
        None,
        4,
        frozenset({"reference"}),
        ("samples",),
        lambda ctx: ctx.sliced_wasserstein(real=True),
        table=False,
        description="the sliced Wasserstein distance of a fresh real sample",
        applies=vectors,
    )
)
register(
    Metric(
        "mmd_floor",
        "MMD² floor (a fresh real sample scored as generated)",
        "",
        None,
        5,
        frozenset({"reference"}),
        ("samples",),
        lambda ctx: ctx.mmd(real=True),
        table=False,
        description="the MMD^2 of a fresh real sample (about 0)",
        applies=vectors,
    )
)


def _has_density(dataset: str, shape: tuple[int, ...]) -> bool:
    return vectors(dataset, shape) and data.get(dataset).log_density is not None


register(
    Metric(
        "log_density",
        "Mean log-density of the samples under the true density",
        "nats",
        "higher",
        3,
        frozenset({"samples", "reference"}),
        ("samples",),
        lambda ctx: ctx.log_density(),
        floor="log_density_floor",
        applies=_has_density,
        description=(
            "mean log-density of the samples under the dataset's true density (datasets with a "
            "known density)"
        ),
        averaged=True,
    )
)
register(
    Metric(
        "log_density_floor",
        "Mean log-density of a fresh real sample (what a perfect model scores)",
        "nats",
        None,
        3,
        frozenset({"reference"}),
        ("samples",),
        lambda ctx: ctx.log_density(real=True),
        table=False,
        applies=_has_density,
        description=(
            "mean true log-density of a fresh real sample: what a perfect model scores on average"
        ),
    )
)


def images(_dataset: str, shape: tuple[int, ...]) -> bool:
    """The image metrics score samples [C, H, W] in a feature network's space."""
    return len(shape) == 3


def labelled_images(dataset: str, shape: tuple[int, ...]) -> bool:
    return images(dataset, shape) and data.get(dataset).labels is not None


IMAGE_READS = ("samples", "features")
for key, title, unit, direction, digits, description, applies in (
    (
        "frechet_distance",
        "Frechet distance (feature network)",
        "",
        "lower",
        3,
        "Frechet distance between Gaussians fitted to real and generated images' features "
        "(a classifier trained on the dataset's own training split)",
        images,
    ),
    (
        "precision",
        "Precision (k-NN manifold, k = 5)",
        "",
        "higher",
        3,
        "fraction of generated images inside the real images' k-NN manifold (Kynkaanniemi "
        "et al. 2019), 1,000 a side",
        images,
    ),
    (
        "recall",
        "Recall (k-NN manifold, k = 5)",
        "",
        "higher",
        3,
        "fraction of real images inside the generated images' k-NN manifold",
        images,
    ),
    (
        "class_kl",
        "Class KL (mode coverage)",
        "bits",
        "lower",
        3,
        "KL(true label distribution || the classifier's label histogram of the samples)",
        labelled_images,
    ),
):
    register(
        Metric(
            key,
            title,
            unit,
            direction,  # type: ignore[arg-type]
            digits,
            frozenset({"samples", "reference"}),
            IMAGE_READS,
            lambda ctx, key=key: ctx.image_score(key),
            paired=direction == "lower",
            floor=f"{key}_floor",
            description=description,
            applies=applies,
            averaged=True,
        )
    )
for key, title, applies in (
    ("frechet_distance", "Frechet distance", images),
    ("precision", "Precision", images),
    ("recall", "Recall", images),
    ("class_kl", "Class KL", labelled_images),
):
    register(
        Metric(
            f"{key}_floor",
            f"{title} floor (a fresh real sample scored as generated)",
            "bits" if key == "class_kl" else "",
            None,
            3,
            frozenset({"reference"}),
            IMAGE_READS,
            lambda ctx, key=key: ctx.image_score(key, real=True),
            table=False,
            description=f"{title} of real held-out images: what a perfect model scores",
            applies=applies,
        )
    )
register(
    Metric(
        "feature_accuracy",
        "Feature network's held-out accuracy",
        "",
        None,
        3,
        frozenset({"reference"}),
        ("features",),
        lambda ctx: ctx.feature_accuracy(),
        table=False,
        description="the image metrics' classifier on held-out images of the dataset",
        applies=labelled_images,
    )
)
register(
    Metric(
        "steps_to_target",
        "Steps to target",
        "steps",
        "lower",
        0,
        frozenset({"curve", "target"}),
        (),
        lambda ctx: ctx.steps_to_target(),
        derived=True,
        description=(
            "first recorded step at which the held-out EMA loss reaches the dataset's target "
            "(the baseline's final held-out EMA loss x 1.01 unless the study sets it)"
        ),
    )
)
register(
    Metric(
        "seconds_to_target",
        "Seconds to target",
        "s",
        "lower",
        1,
        frozenset({"curve", "target", "training"}),
        (),
        lambda ctx: ctx.seconds_to_target(),
        derived=True,
        description="steps to target at the run's measured step rate (training time / steps)",
    )
)


def averaged() -> list[Metric]:
    """The metrics a post-hoc EMA sweep can measure, in registry order."""
    return [m for m in METRICS.values() if m.averaged]


def measurement_keys(settings: Any) -> dict[str, str]:
    """metric -> its measurement key under ``settings``, for every stored metric."""
    return {m.key: m.key_for(settings) for m in METRICS.values() if not m.derived}
