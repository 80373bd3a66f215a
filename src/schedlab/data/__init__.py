"""Datasets by name: each declares its dimension and how to generate n points from a seed.

The reference study's four 2D sets live in ``toy2d``; ``digits`` (64-D) and ``mixture`` (any
dimension, its density known) test whether a ranking found in 2-D holds higher up. The
training set is a dataset's generator under seed ``TRAIN_SEED`` (42, as the reference); the
held-out split for evaluation is the same generator under ``HELDOUT_SEED``, never a slice of
the training points. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from schedlab.data import digits, mixture, toy2d
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
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(names())}")
    return DATASETS[name]


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
    name: str, n: int = 100_000, seed: int = TRAIN_SEED, dimension: int | None = None
) -> np.ndarray:
    """``n`` points of dataset ``name`` as float32 of shape [n, dim]."""
    dataset = get(name)
    if n <= 0:
        raise ValueError(f"n must be a positive number of points, got {n}")
    size = dim(name, dimension)
    raw = dataset.generate(n, seed) if dataset.dim is not None else dataset.generate(n, seed, size)
    points = np.asarray(raw, dtype=np.float32)
    if points.shape != (n, size):
        raise ValueError(f"dataset {name!r} generated shape {points.shape}, expected ({n}, {size})")
    return points


def load_heldout(name: str, n: int = 10_000, dimension: int | None = None) -> np.ndarray:
    """A held-out evaluation split: the same distribution under a seed training never uses."""
    return load(name, n, seed=HELDOUT_SEED, dimension=dimension)
