"""scikit-learn's 8x8 handwritten digits as 64-dimensional points (shipped with scikit-learn).

1,797 images of grey levels 0..16. Every fifth image (index % 5 == 0: 360 images) is held out;
the training set draws from the other 1,437. A draw picks an image at random and adds uniform
noise of one grey level (dequantization: the points get a density, and no two coincide, which
the kNN estimates need), then maps grey levels 0..16 to [-4, 4], the spread of the 2-D sets.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from schedlab.data.seeds import HELDOUT_SEED

GREY_LEVELS = 16
SPREAD = 4.0


@cache
def images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(training images [1437, 64], held-out images [360, 64]) as float64 grey levels, and
    their digits (training [1437], held-out [360])."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels, target = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    held_out = np.arange(len(pixels)) % 5 == 0
    return pixels[~held_out], pixels[held_out], target[~held_out], target[held_out]


def _draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """(the images drawn [n], their pool, the generator after the draw)."""
    train, heldout, _, _ = images()
    pool = heldout if seed == HELDOUT_SEED else train
    rng = np.random.default_rng(seed)
    return rng.integers(0, len(pool), n), pool, rng


def digits(n: int, seed: int) -> np.ndarray:
    index, pool, rng = _draw(n, seed)
    grey = pool[index] + rng.uniform(-0.5, 0.5, (n, pool.shape[1]))
    return (grey / GREY_LEVELS * 2 - 1) * SPREAD


def labels(n: int, seed: int) -> np.ndarray:
    """The digit (0-9) of each image ``digits(n, seed)`` draws."""
    index, _, _ = _draw(n, seed)
    _, _, train, heldout = images()
    return (heldout if seed == HELDOUT_SEED else train)[index]
