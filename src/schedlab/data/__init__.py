"""Datasets by name: each declares its dimension and how to generate n points from a seed.

The reference study's four 2D sets live in ``toy2d``. The training set is the generator under
seed ``TRAIN_SEED`` (42, as the reference); a held-out split for evaluation is the same
generator under ``HELDOUT_SEED``, a fresh draw from the same distribution, never a slice of the
training points. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from schedlab.data import toy2d

TRAIN_SEED = 42
HELDOUT_SEED = 20_250_042

Generate = Callable[[int, int], np.ndarray]  # (n, seed) -> [n, dim] points


@dataclass(frozen=True)
class Dataset:
    name: str
    dim: int
    generate: Generate
    description: str = ""


DATASETS: dict[str, Dataset] = {}


def register(dataset: Dataset) -> Dataset:
    """Add a dataset (a plug-in, or a test's own); its name must be new."""
    if dataset.name in DATASETS:
        raise ValueError(f"dataset {dataset.name!r} is registered already")
    if dataset.dim < 1:
        raise ValueError(f"dataset {dataset.name!r}: dim must be >= 1, got {dataset.dim}")
    DATASETS[dataset.name] = dataset
    return dataset


register(Dataset("circle", 2, toy2d.circle, "points near a circle of grid directions"))
register(Dataset("dino", 2, toy2d.dino, "the Datasaurus dino, jittered"))
register(Dataset("line", 2, toy2d.line, "a filled rectangle (the reference's 'line')"))
register(Dataset("moons", 2, toy2d.moons, "two interleaved half circles"))


def names() -> list[str]:
    return sorted(DATASETS)


def get(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(names())}")
    return DATASETS[name]


def check_name(name: str) -> str:
    return get(name).name


def dim(name: str) -> int:
    return get(name).dim


def load(name: str, n: int = 100_000, seed: int = TRAIN_SEED) -> np.ndarray:
    """``n`` points of dataset ``name`` as float32 of shape [n, dim]."""
    dataset = get(name)
    if n <= 0:
        raise ValueError(f"n must be a positive number of points, got {n}")
    points = np.asarray(dataset.generate(n, seed), dtype=np.float32)
    if points.shape != (n, dataset.dim):
        raise ValueError(
            f"dataset {name!r} generated shape {points.shape}, expected ({n}, {dataset.dim})"
        )
    return points


def load_heldout(name: str, n: int = 10_000) -> np.ndarray:
    """A held-out evaluation split: the same distribution under a seed training never uses."""
    return load(name, n, seed=HELDOUT_SEED)
