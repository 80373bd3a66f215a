"""A Gaussian mixture in any dimension, whose density is known: a ground truth for quality.

Eight equally weighted components; their means (uniform in [-3, 3]^d) and covariances
(random rotations of variances in [0.02, 0.08]) are drawn from a seed fixed per dimension, so
`mixture` in dimension d is one distribution for every run and every study.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

COMPONENTS = 8
PARAMETER_SEED = 8_000_000


@cache
def parameters(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(means [8, d], covariances [8, d, d]) of the mixture in dimension ``dim``."""
    rng = np.random.default_rng(PARAMETER_SEED + dim)
    means = rng.uniform(-3.0, 3.0, (COMPONENTS, dim))
    rotations = np.linalg.qr(rng.normal(size=(COMPONENTS, dim, dim)))[0]
    variances = rng.uniform(0.02, 0.08, (COMPONENTS, dim))
    covariances = rotations @ (variances[..., None] * rotations.transpose(0, 2, 1))
    return means, covariances


def mixture(n: int, seed: int, dim: int) -> np.ndarray:
    means, covariances = parameters(dim)
    rng = np.random.default_rng(seed)
    component = rng.integers(0, COMPONENTS, n)
    factors = np.linalg.cholesky(covariances)  # [8, d, d]
    noise = rng.normal(size=(n, dim))
    return means[component] + np.einsum("nij,nj->ni", factors[component], noise)


def log_density(points: np.ndarray) -> np.ndarray:
    """log p(x) of each point [m, d] under the mixture of its dimension, in nats."""
    points = np.asarray(points, dtype=np.float64)
    means, covariances = parameters(points.shape[1])
    per_component = np.stack(
        [multivariate_normal(m, c).logpdf(points) for m, c in zip(means, covariances, strict=True)],
        axis=-1,
    ).reshape(len(points), COMPONENTS)
    return logsumexp(per_component, axis=-1) - math.log(COMPONENTS)
