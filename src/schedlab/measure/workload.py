"""A ``Workload`` (AlgoPerf's word): a dataset at given settings, with what measuring needs.

The training points, the held-out loss with its fixed draws (also the held-out curve's), the
KL reference and its bias floor: built once per dataset and settings, reused by every schedule
and seed.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from schedlab import data
from schedlab.config.settings import Settings
from schedlab.measure.distances import SampleDistances
from schedlab.measure.images import ImageReference, features_of
from schedlab.measure.kl import KLReference
from schedlab.measure.losses import HeldoutLoss
from schedlab.model.diffusion import NoiseSchedule
from schedlab.training.common import noise_schedule


class Workload:
    def __init__(
        self, dataset: str, settings: Settings, shape: tuple[int, ...] | None = None
    ) -> None:
        """``shape``: one sample's shape as the run's model sees it (default: vectors)."""
        self.dataset = dataset
        self.settings = settings
        self.dim = data.dim(dataset, settings.data.dim)
        self.shape = shape or (self.dim,)
        self.dtype = settings.train.torch_dtype
        self.points = data.load(dataset, settings.data.n, dimension=self.dim, shape=self.shape)
        self.noise: NoiseSchedule = noise_schedule(settings.train)
        # Built now, not on first use: a fleet's shard threads all read it while training.
        heldout = data.load_heldout(dataset, settings.eval.heldout, self.dim, self.shape)
        self.heldout = HeldoutLoss(heldout, self.noise, self.dtype)

    @cached_property
    def kl_reference(self) -> KLReference:
        return KLReference(self.points)

    @cached_property
    def fresh_sample(self) -> np.ndarray:
        """Real points the model never saw, as many as it generates: scored as if generated,
        they give each sample metric's floor (what a perfect model scores, not 0)."""
        return data.load_heldout(self.dataset, self.settings.eval.samples, self.dim, self.shape)

    @cached_property
    def kl_floor(self) -> float:
        return self.kl_reference.kl(self.fresh_sample)

    @cached_property
    def distances(self) -> SampleDistances:
        return SampleDistances(self.points)

    @cached_property
    def sliced_wasserstein_floor(self) -> float:
        return self.distances.sliced_wasserstein(self.fresh_sample)

    @cached_property
    def mmd_floor(self) -> float:
        return self.distances.mmd(self.fresh_sample)

    @cached_property
    def image_reference(self) -> ImageReference | None:
        """The real images in the image metrics' feature space (None: no features for this
        dataset: not images, or unlabelled without a feature function)."""
        features = features_of(self.dataset, self.shape, self.settings.eval.features)
        return ImageReference(self.dataset, features, self.points) if features else None

    @cached_property
    def image_floors(self) -> dict[str, float]:
        """The image metrics of a fresh real held-out sample scored as if generated."""
        reference = self.image_reference
        assert reference is not None
        return reference.scores(self.fresh_sample)

    @staticmethod
    def key(dataset: str, settings: Settings, shape: tuple[int, ...] | None = None) -> tuple:
        """Settings that change a workload (not the schedule, LR or step count)."""
        t = settings.train
        return (
            dataset,
            shape,
            settings.data,
            settings.eval,
            t.dtype,
            t.timesteps,
            t.beta_schedule,
        )
