"""Optuna samplers whose every draw is a function of the search, the trial and the parameter.

A sampler is made afresh, with its own seed, for each parameter of each trial. A trial asked
again after a kill (its parameters partly stored) then draws what an uninterrupted search
would have drawn, whatever happened before: the seeded sampler's random stream never depends
on how many draws this process made.
"""

from __future__ import annotations

import hashlib
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from scipy.stats import qmc

from schedlab.config.space import Dim, draw


def derived_seed(*parts: object) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def make_sampler(
    kind: str, seed: int, search: str, trial: int, param: str, dims: list[Dim], startup: int
) -> optuna.samplers.BaseSampler:
    """The sampler that draws ``param`` of trial number ``trial`` of ``search``."""
    if kind == "qmc":
        return SobolSampler(dims, derived_seed(seed, search))
    own = derived_seed(seed, search, trial, param)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=own)
    # The first batch is random (no completed trial to learn from yet); TPE after it.
    return optuna.samplers.TPESampler(seed=own, n_startup_trials=startup)


class SobolSampler(optuna.samplers.BaseSampler):
    """Trial n takes point n of one scrambled Sobol sequence over the search space.

    Written here because Optuna's QMCSampler numbers its points with a counter in the storage
    that advances when a trial is asked: a kill between the two would shift every later point.
    Indexing by trial number keeps a resumed search on the same points.
    """

    def __init__(self, dims: list[Dim], seed: int) -> None:
        self.dims = {d.name: (i, d) for i, d in enumerate(dims)}
        self.seed = seed

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: Any, trial: Any, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        index, dim = self.dims[param_name]
        m = max(1, trial.number.bit_length())  # 2 ** m > trial.number
        points = qmc.Sobol(len(self.dims), scramble=True, seed=self.seed).random_base2(m)
        value = draw(dim, float(points[trial.number, index]))
        return int(value) if isinstance(param_distribution, IntDistribution) else value
