"""Datasets by name: each declares its dimension and how to generate n points from a seed.

The reference study's four 2D sets live in ``toy2d``; ``digits`` (64-D vectors, or [1, 8, 8]
images for a model that takes images) and ``mixture`` (any dimension, its density known) test
whether a ranking found in 2-D holds higher up. A user dataset is named ``module:function``,
called as ``function(n, seed)`` -> array [n, *shape] (``schedlab.usercode`` finds it). The
training set is a dataset's generator under seed ``TRAIN_SEED`` (42, as the reference); the
held-out split for evaluation is the same generator under ``HELDOUT_SEED``, never a slice of
the training points. Nothing here imports torch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from schedlab import usercode
from schedlab.data import digits, mixture, shapes, toy2d
from schedlab.data.seeds import HELDOUT_SEED, TRAIN_SEED

DEFAULT_DIM = 8  # of a dataset that takes any dimension, unless [data] dim says otherwise


@dataclass(frozen=True)
class Dataset:
    name: str
    dim: int | None  # None: any dimension, set by the study's [data] dim
    generate: Callable[..., np.ndarray]  # (n, seed) -> [n, dim]; (n, seed, dim) if dim is None
    description: str = ""
    source: str = ""
    # The true log-density of points [m, d], in nats, where it is known.
    log_density: Callable[[np.ndarray], np.ndarray] | None = None
    # The [C, H, W] images its vectors are, offered to models that take images (digits), and
    # the factor that maps its values to pixels in [-1, 1] (digits' vectors span [-4, 4], the
    # 2-D sets' spread; an image model sees the usual pixel range).
    image_shape: tuple[int, ...] | None = None
    image_scale: float = 1.0
    source_hash: str | None = None  # a user dataset's module source
    # The class of each sample generate(n, seed) draws (labels(n, seed) -> [n] ints in
    # range(len(classes))), for labelled sets: what image metrics' feature network learns.
    labels: Callable[[int, int], np.ndarray] | None = None
    classes: tuple[str, ...] = ()

    def shape(self, requested: int | None = None) -> tuple[int, ...]:
        """One sample's natural shape: its image shape, else its vector dimension."""
        if self.image_shape is not None:
            return self.image_shape
        return (self.dim if self.dim is not None else requested or DEFAULT_DIM,)


DATASETS: dict[str, Dataset] = {}


def register(dataset: Dataset) -> Dataset:
    """Add a dataset (a plug-in, or a test's own); its name must be new."""
    if dataset.name in DATASETS:
        raise ValueError(f"dataset {dataset.name!r} is registered already")
    if dataset.dim is not None and dataset.dim < 1:
        raise ValueError(f"dataset {dataset.name!r}: dim must be >= 1, got {dataset.dim}")
    DATASETS[dataset.name] = dataset
    return dataset


REFERENCE = "the reference study (SPEC.md)"
register(Dataset("circle", 2, toy2d.circle, "points near a circle of grid directions", REFERENCE))
register(Dataset("dino", 2, toy2d.dino, "the Datasaurus dino, jittered", REFERENCE))
register(Dataset("line", 2, toy2d.line, "a filled rectangle (the reference's 'line')", REFERENCE))
register(Dataset("moons", 2, toy2d.moons, "two interleaved half circles", REFERENCE))
register(
    Dataset(
        "digits",
        64,
        digits.digits,
        "8x8 handwritten digits, dequantized; every 5th image held out",
        "scikit-learn's load_digits (1,797 images, shipped with scikit-learn)",
        image_shape=(1, 8, 8),
        image_scale=1 / digits.SPREAD,
        labels=digits.labels,
        classes=tuple(str(d) for d in range(10)),
    )
)
register(
    Dataset(
        "shapes",
        shapes.SIZE**2,
        shapes.shapes,
        "16x16 images of a square, disk, triangle or cross of random position, size and "
        "brightness; labelled by kind",
        "generated (factors: kind, centre, radius, intensity)",
        image_shape=(1, shapes.SIZE, shapes.SIZE),
        labels=shapes.labels,
        classes=shapes.KINDS,
    )
)
register(
    Dataset(
        "mixture",
        None,
        mixture.mixture,
        "8 Gaussians with random covariances; its log-density is known",
        "generated (parameters fixed per dimension)",
        mixture.log_density,
    )
)


def names() -> list[str]:
    return sorted(DATASETS)


def get(name: str) -> Dataset:
    """The dataset ``name``, or a user dataset given as ``module:function``."""
    return usercode.lookup(name, DATASETS, "dataset", user_defined)


@functools.cache  # one import, probe and source hash per process
def user_defined(reference: str) -> Dataset:
    """A dataset from ``module:function``, function(n, seed) -> [n, *shape]; its shape is
    probed once with a few points."""
    function, module = usercode.load(reference, "dataset")
    probe = _checked(reference, _called(reference, function, 4, TRAIN_SEED), 4, None)
    shape = tuple(int(s) for s in probe.shape[1:])
    return Dataset(
        reference,
        math.prod(shape),
        function,
        usercode.first_line(function, "user-defined dataset"),
        "user module",
        image_shape=shape if len(shape) != 1 else None,
        source_hash=usercode.source_hash(module),
    )


def _called(name: str, function: Callable[..., object], *args: int) -> object:
    try:
        return function(*args)
    except Exception as err:  # user code: its failure is one line naming it
        raise ValueError(f"dataset {name!r} raised {type(err).__name__}: {err}") from err


def _checked(name: str, raw: object, n: int, shape: tuple[int, ...] | None) -> np.ndarray:
    """``raw`` as float32 [n, *shape], finite; a one-line ValueError naming the dataset else."""
    try:
        points = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"dataset {name!r} did not return an array of numbers: {err}") from err
    if points.ndim < 2 or points.shape[0] != n or (shape is not None and points.shape[1:] != shape):
        expected = f"({n}, {', '.join(map(str, shape))})" if shape else f"({n}, ...)"
        raise ValueError(f"dataset {name!r} generated shape {points.shape}, expected {expected}")
    if not np.isfinite(points).all():
        raise ValueError(f"dataset {name!r} generated NaN or infinite values")
    return points


def shape(name: str, requested: int | None = None) -> tuple[int, ...]:
    """One sample's natural shape for dataset ``name`` (see ``Dataset.shape``)."""
    return get(name).shape(requested)


def check_name(name: str) -> str:
    return get(name).name


def dim(name: str, requested: int | None = None) -> int:
    """The dimension of dataset ``name``: its own, or ``requested`` (default 8) if it takes any."""
    dataset = get(name)
    if dataset.dim is not None:
        return dataset.dim
    return requested if requested is not None else DEFAULT_DIM


def check_dim_setting(datasets: list[str], requested: int | None) -> None:
    """A set ``[data] dim`` needs a dataset that takes a dimension; a clear error otherwise."""
    if requested is None or any(get(name).dim is None for name in datasets):
        return
    takes = ", ".join(n for n in names() if DATASETS[n].dim is None)
    raise ValueError(
        f"dim = {requested} is set, but {', '.join(datasets)} have fixed dimensions; "
        f"dim applies to: {takes}"
    )


def load(
    name: str,
    n: int = 100_000,
    seed: int = TRAIN_SEED,
    dimension: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """``n`` points of dataset ``name`` as float32 of shape [n, dim], or [n, *shape] for a
    ``shape`` of as many numbers (digits as [1, 8, 8] images, their values as pixels in
    [-1, 1])."""
    dataset = get(name)
    if n <= 0:
        raise ValueError(f"n must be a positive number of points, got {n}")
    size = dim(name, dimension)
    args = (n, seed) if dataset.dim is not None else (n, seed, size)
    raw = _called(name, dataset.generate, *args)
    natural = dataset.shape(size)
    if dataset.image_shape is not None and np.shape(raw)[1:] == (size,):
        raw = np.reshape(raw, (n, *natural))  # a built-in's images come as vectors
    points = _checked(name, raw, n, natural)
    if shape is not None and len(shape) == 3 and dataset.image_scale != 1.0:
        points = points * np.float32(dataset.image_scale)  # as pixels in [-1, 1]
    return points.reshape(n, *(shape or (size,)))


def load_heldout(
    name: str, n: int = 10_000, dimension: int | None = None, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """A held-out evaluation split: the same distribution under a seed training never uses."""
    return load(name, n, seed=HELDOUT_SEED, dimension=dimension, shape=shape)
