"""A user dataset for schedlab: 8x8 images of one bright bar, horizontal or vertical.

schedlab calls ``bars(n, seed)`` and expects an array [n, *shape]: here [n, 1, 8, 8].
Training and held-out sets come from different seeds.
"""

import numpy as np


def bars(n: int, seed: int) -> np.ndarray:
    """8x8 images of one bar (random row or column, random brightness), values in [-1, 1]."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 1, 8, 8), -1.0)
    where = rng.integers(0, 8, n)
    vertical = rng.random(n) < 0.5
    level = rng.uniform(0.5, 1.0, n)
    for i in range(n):
        if vertical[i]:
            images[i, 0, :, where[i]] = level[i]
        else:
            images[i, 0, where[i], :] = level[i]
    return images + rng.normal(0.0, 0.05, images.shape)


def features(images: np.ndarray) -> np.ndarray:
    """Features for the image metrics of an unlabelled set (`[eval] features`): each image's
    row and column means, [n, 16]."""
    return np.concatenate([images.mean(axis=(1, 2)), images.mean(axis=(1, 3))], axis=1)
