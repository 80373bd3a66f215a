"""The kNN estimate of KL(real || generated) (NPEET's estimator, on SciPy's KD-tree)."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from schedlab.threads import budget


class KLReference:
    """kNN estimate of KL(real || generated) in bits against one fixed real set.

    D = [ln(m / (n - 1)) + d (mean ln nu_k - mean ln rho_k)] / ln 2, Chebyshev metric (as the
    reference's NPEET estimator). The real set's rho_k is computed once and reused.
    """

    def __init__(self, real: np.ndarray, k: int = 5) -> None:
        real = np.asarray(real, dtype=np.float64)
        if real.ndim != 2 or len(real) <= k:
            raise ValueError(f"real set must be [n > k={k}, d] points, got shape {real.shape}")
        if not np.isfinite(real).all():
            raise ValueError("real set contains NaN/inf points")
        self.real, self.k = real, k
        # Exact duplicates would give a zero distance and an infinite estimate; distances are
        # floored at a tiny fraction of the data's scale instead.
        self.floor = 1e-12 * max(1.0, float(np.abs(real).max()))
        rho = cKDTree(real).query(real, k=k + 1, p=np.inf, workers=budget())[0][:, k]
        self.mean_log_rho = float(np.log(np.maximum(rho, self.floor)).mean())

    def kl(self, generated: np.ndarray) -> float:
        generated = np.asarray(generated, dtype=np.float64)
        n, d = self.real.shape
        if generated.ndim != 2 or generated.shape[1] != d:
            raise ValueError(f"generated points must have shape [m, {d}], got {generated.shape}")
        bad = int((~np.isfinite(generated).all(axis=1)).sum())
        if bad:
            raise ValueError(f"{bad} of {len(generated)} generated points are NaN/inf")
        m = len(generated)
        if m < self.k:
            raise ValueError(f"need at least k={self.k} generated points, got {m}")
        nu = cKDTree(generated).query(self.real, k=self.k, p=np.inf, workers=budget())[0]
        nu = nu[:, self.k - 1] if self.k > 1 else nu
        mean_log_nu = float(np.log(np.maximum(nu, self.floor)).mean())
        return (math.log(m / (n - 1)) + d * (mean_log_nu - self.mean_log_rho)) / math.log(2)


def kl_divergence(real: np.ndarray, generated: np.ndarray, k: int = 5) -> float:
    """KL(real || generated) in bits by the kNN estimator (see KLReference)."""
    return KLReference(real, k).kl(generated)
