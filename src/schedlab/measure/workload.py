"""A ``Workload`` (AlgoPerf's word): a dataset at given settings, with what measuring needs.

The training points, the held-out loss with its fixed draws, the KL reference and its bias
floor: built once per dataset and settings, reused by every schedule and seed.
"""

from __future__ import annotations

from functools import cached_property

from schedlab import data
from schedlab.config.settings import Settings
from schedlab.measure.kl import KLReference
from schedlab.measure.losses import HeldoutLoss
from schedlab.model.diffusion import NoiseSchedule
from schedlab.training.common import noise_schedule


class Workload:
    def __init__(self, dataset: str, settings: Settings) -> None:
        self.dataset = dataset
        self.settings = settings
        self.dim = data.dim(dataset)
        self.dtype = settings.train.torch_dtype
        self.points = data.load(dataset, settings.data.n)  # [n, d]
        self.noise: NoiseSchedule = noise_schedule(settings.train)

    @cached_property
    def heldout(self) -> HeldoutLoss:
        points = data.load_heldout(self.dataset, self.settings.eval.heldout)
        return HeldoutLoss(points, self.noise, self.dtype)

    @cached_property
    def kl_reference(self) -> KLReference:
        return KLReference(self.points)

    @cached_property
    def kl_floor(self) -> float:
        """The estimator's bias here: a fresh real sample scored as if generated. A perfect
        model scores about this, not 0."""
        return self.kl_reference.kl(data.load_heldout(self.dataset, self.settings.eval.samples))

    @staticmethod
    def key(dataset: str, settings: Settings) -> tuple:
        """Settings that change a workload (not the schedule, LR or step count)."""
        t = settings.train
        return (dataset, settings.data, settings.eval, t.dtype, t.timesteps, t.beta_schedule)
