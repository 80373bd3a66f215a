"""Power-function EMA profiles, written from the equations of EDM2 (Section 3, Appendix C.2).

A power-function EMA with exponent gamma averages the weights theta_1 .. theta_t of the first t
optimizer steps with weights proportional to tau^gamma. It is tracked by moving the average
after step t (counted from 1) by beta_t = (1 - 1/t)^(gamma + 1), towards theta_t. Its length
is given as the relative standard deviation of that profile, sigma_rel = sqrt((gamma + 1) /
((gamma + 2)^2 (gamma + 3))): the profile's width over the training so far.

Reconstruction (the paper's Algorithm 3): the continuous profile of an EMA at time t with
exponent gamma is p(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t]. The inner product
of two such profiles has a closed form; the combination of stored snapshots whose profile is
closest (least squares) to a target profile solves a small linear system, and its weights are
normalized to sum to 1. Written here by hand: no library does this (ema-pytorch's PostHocEMA
holds it inside its training-time class; EDM2's code is CC BY-NC-SA and is not used).
"""

from __future__ import annotations

import math

import numpy as np

# sigma_rel(gamma) is largest at gamma = (sqrt(5) - 3) / 2: no power-function EMA is longer.
_GAMMA_AT_MAX = (math.sqrt(5.0) - 3.0) / 2.0


def std_of(gamma: float) -> float:
    """The relative standard deviation of the profile with exponent ``gamma`` (> -1)."""
    return math.sqrt((gamma + 1.0) / ((gamma + 2.0) ** 2 * (gamma + 3.0)))


STD_MAX = std_of(_GAMMA_AT_MAX)  # 0.3003


def gamma_of(std: float) -> float:
    """The exponent whose profile has relative standard deviation ``std``: the largest real
    root of gamma^3 + 7 gamma^2 + (16 - 1/std^2) gamma + 12 - 1/std^2 (from sigma_rel(gamma))."""
    if not 0.0 < std <= STD_MAX:
        raise ValueError(
            f"an EMA's relative std must be in (0, {STD_MAX:.4f}] (the longest a power-function "
            f"EMA can be), got {std:g}"
        )
    inverse = std**-2
    roots = np.roots([1.0, 7.0, 16.0 - inverse, 12.0 - inverse])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def beta(count: int, gamma: float) -> float:
    """The EMA's decay after optimizer step ``count`` (counted from 1): 0 at the first step,
    which makes the average the weights themselves."""
    return (1.0 - 1.0 / count) ** (gamma + 1.0)


def snapshot_steps(steps: int, snapshots: int) -> list[int]:
    """The steps (counted from 1) after which a run of ``steps`` steps stores its EMAs:
    ``snapshots`` evenly spaced ones, the last at the end of training."""
    return sorted({max(1, round(i * steps / snapshots)) for i in range(1, snapshots + 1)})


def inner_products(
    t_a: np.ndarray, gamma_a: np.ndarray, t_b: np.ndarray, gamma_b: np.ndarray
) -> np.ndarray:
    """<p_a, p_b> = integral over [0, min(t_a, t_b)] of the two profiles' product,
    elementwise (broadcast): (ga + 1)(gb + 1) / (ga + gb + 1) * min^(ga + gb + 1) /
    (t_a^(ga + 1) t_b^(gb + 1)), written as ratios so large exponents do not overflow."""
    t_a, gamma_a, t_b, gamma_b = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (t_a, gamma_a, t_b, gamma_b))
    )
    first = t_a <= t_b
    shorter, longer = np.where(first, t_a, t_b), np.where(first, t_b, t_a)
    exponent = np.where(first, gamma_b, gamma_a)  # of the longer profile
    ratio = (shorter / longer) ** exponent
    return (gamma_a + 1.0) * (gamma_b + 1.0) * ratio / ((gamma_a + gamma_b + 1.0) * longer)


def coefficients(
    steps: np.ndarray, gammas: np.ndarray, target_step: int, target_gamma: float
) -> np.ndarray:
    """The weights of the snapshots (taken after ``steps`` with exponents ``gammas``) whose
    combination best approximates the profile (``target_step``, ``target_gamma``) in least
    squares, normalized to sum to 1."""
    steps, gammas = np.asarray(steps, dtype=np.float64), np.asarray(gammas, dtype=np.float64)
    gram = inner_products(steps[:, None], gammas[:, None], steps[None, :], gammas[None, :])
    toward = inner_products(steps, gammas, float(target_step), float(target_gamma))
    solution = np.linalg.lstsq(gram, toward, rcond=None)[0]
    return solution / solution.sum()


def reconstruction(
    steps: np.ndarray, gammas: np.ndarray, target_step: int, target_gamma: float
) -> tuple[float, float]:
    """How well the snapshots (``steps``, ``gammas``) build the target profile: (the relative
    L2 error of the combination's profile, ||p - p_target|| / ||p_target||, and the relative
    standard deviation the combination actually has). Profiles on [0, t] with exponent g have
    E[tau] = (g + 1) / (g + 2) t and E[tau^2] = (g + 1) / (g + 3) t^2; the combination's
    moments are the coefficient-weighted sums (its coefficients sum to 1)."""
    steps, gammas = np.asarray(steps, dtype=np.float64), np.asarray(gammas, dtype=np.float64)
    c = coefficients(steps, gammas, target_step, target_gamma)
    gram = inner_products(steps[:, None], gammas[:, None], steps[None, :], gammas[None, :])
    toward = inner_products(steps, gammas, float(target_step), float(target_gamma))
    target = float(inner_products(target_step, target_gamma, target_step, target_gamma))
    squared = max(float(c @ gram @ c - 2.0 * c @ toward + target), 0.0)
    first = float(np.sum(c * (gammas + 1.0) / (gammas + 2.0) * steps))
    second = float(np.sum(c * (gammas + 1.0) / (gammas + 3.0) * steps**2))
    spread = math.sqrt(max(second - first**2, 0.0)) / target_step
    return math.sqrt(squared / target), spread
