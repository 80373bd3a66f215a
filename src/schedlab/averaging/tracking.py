"""The power-function EMAs a run tracks while it trains, and the snapshots it keeps of them.

Both engines track them the same way: after optimizer step t (counted from 1) each profile's
average moves towards the weights by 1 - beta_t (``profiles.beta``), in the run's dtype; the
reference loop per parameter tensor, the fleet on its [K, P] weights (one lerp per profile).
At each snapshot step the averages are copied out as flat vectors (the layout of
``weights_vector``).
"""

from __future__ import annotations

import torch

from schedlab.averaging.plan import PosthocPlan
from schedlab.averaging.profiles import beta, gamma_of


class PowerEMA:
    """Power-function EMAs of some tensors, one average per profile and source."""

    def __init__(
        self,
        sources: list[torch.Tensor],
        plan: PosthocPlan,
        averages: list[list[torch.Tensor]] | None = None,
    ) -> None:
        """``averages[i]``: profile i's averages of the sources (given when resuming)."""
        self.sources, self.plan = sources, plan
        self.gammas = [gamma_of(std) for std in plan.stds]
        self.averages = averages or [[s.detach().clone() for s in sources] for _ in plan.stds]

    @torch.no_grad()
    def update(self, count: int) -> None:
        """After optimizer step ``count`` (counted from 1)."""
        for gamma, averages in zip(self.gammas, self.averages, strict=True):
            decay = beta(count, gamma)
            for average, source in zip(averages, self.sources, strict=True):
                if decay == 0.0:
                    average.copy_(source)
                else:
                    average.lerp_(source, 1.0 - decay)

    def due(self, count: int) -> bool:
        return count in self.plan.steps
