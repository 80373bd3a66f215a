"""``shapes``: 16x16 grey images of one shape each, generated from known factors (no download).

Each image draws its factors independently: the kind (square, disk, triangle, cross: the
label, uniform), the centre (uniform, the shape kept inside the frame), the size (a radius of
3 to 6 pixels) and the intensity (0.5 to 1 of full brightness), on a black background, with
Gaussian pixel noise of std 0.02; pixel values are mapped from [0, 1] to [-1, 1]. The shapes
are drawn anti-aliased (each pixel covered by a 4x4 grid of sub-samples), so a small change of
position or size changes the image a little. ``factors(n, seed)`` gives the factors of exactly
the images ``shapes(n, seed)`` draws.
"""

from __future__ import annotations

import numpy as np

SIZE = 16
KINDS = ("square", "disk", "triangle", "cross")
SUB = 4  # sub-samples per pixel side (anti-aliasing)
NOISE = 0.02


def factors(n: int, seed: int) -> dict[str, np.ndarray]:
    """kind [n] (index into KINDS), centre [n, 2] (row, column), radius [n], intensity [n]."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(KINDS), n)
    radius = rng.uniform(3.0, 6.0, n)
    centre = radius[:, None] + rng.uniform(0.0, 1.0, (n, 2)) * (SIZE - 2 * radius[:, None])
    intensity = rng.uniform(0.5, 1.0, n)
    return {"kind": kind, "centre": centre, "radius": radius, "intensity": intensity}


def labels(n: int, seed: int) -> np.ndarray:
    return factors(n, seed)["kind"]


CHUNK = 2048  # images drawn at once


def _coverage(kind: np.ndarray, centre: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """[m, SIZE, SIZE]: the fraction of each pixel that each image's shape covers."""
    grid = (np.arange(SIZE * SUB) + 0.5) / SUB  # sub-sample centres, in pixels
    y = grid[None, :, None] - centre[:, 0, None, None]  # [m, S, 1]
    x = grid[None, None, :] - centre[:, 1, None, None]  # [m, 1, S]
    r = radius[:, None, None]
    bar = r / 4  # the cross's half width
    inside = np.select(
        [kind[:, None, None] == k for k in range(len(KINDS))],
        [
            (np.abs(x) <= r * 0.8) & (np.abs(y) <= r * 0.8),  # square
            x**2 + y**2 <= r**2,  # disk
            (y <= r / 2) & (y >= -r + 2 * np.abs(x) * 1.5 / np.sqrt(3)),  # triangle, apex up
            ((np.abs(x) <= bar) & (np.abs(y) <= r)) | ((np.abs(y) <= bar) & (np.abs(x) <= r)),
        ],
    )  # [m, S SUB, S SUB]
    return inside.reshape(-1, SIZE, SUB, SIZE, SUB).mean(axis=(2, 4))


def shapes(n: int, seed: int) -> np.ndarray:
    """n images [n, 1, 16, 16] in [-1, 1] (plus noise)."""
    f = factors(n, seed)
    images = np.empty((n, 1, SIZE, SIZE))
    for lo in range(0, n, CHUNK):
        part = slice(lo, lo + CHUNK)
        cover = _coverage(f["kind"][part], f["centre"][part], f["radius"][part])
        images[part, 0] = f["intensity"][part, None, None] * cover
    noise = np.random.default_rng([seed, 1]).normal(0.0, NOISE, images.shape)
    return images * 2 - 1 + noise
