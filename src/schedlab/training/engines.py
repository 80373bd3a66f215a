"""One entry for training, whichever engine: ``train(members, settings, engine)``.

The engine is chosen once, by ``schedlab.config.engines.engine_for``; this module only runs it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from schedlab.averaging.plan import PosthocPlan
from schedlab.config.engines import Engine
from schedlab.config.settings import TrainSettings
from schedlab.training.checkpoint import Checkpoints
from schedlab.training.common import Member, Progress, TrainResult
from schedlab.training.fleet.loop import Curves
from schedlab.training.fleet.shards import train_fleet
from schedlab.training.loop import train_reference


def train(
    members: list[Member],
    settings: TrainSettings,
    engine: Engine,
    device: str | torch.device = "cpu",
    heldout_loss: Callable[[int, nn.Module], float] | None = None,
    progress: Progress | None = None,
    use_compile: bool | None = None,
    checkpoints: Checkpoints | None = None,
    posthoc: PosthocPlan | None = None,
    curves: Curves | None = None,
) -> list[TrainResult]:
    """Train ``members`` (one TrainResult each): as one fleet, or one by one in the loop.

    ``heldout_loss(k, model)`` feeds member k's plateau schedule when it watches the held-out
    loss. ``settings.lr`` is ignored: each member brings its own base LR. ``checkpoints``
    (fleet engine only) resume and save the members' state. ``posthoc``: the power-function
    EMAs every member tracks for post-hoc EMA. ``curves(k, first_step, losses, lrs)`` is
    told member k's new steps as they come (the fleet: every 50 steps; the loop: each run's
    whole curve when it ends).
    """
    if engine == "fleet":
        return train_fleet(
            members,
            settings,
            device,
            heldout_loss,
            progress,
            use_compile,
            None,
            checkpoints,
            posthoc,
            curves,
        )
    results = []
    for k, member in enumerate(members):

        def watched(model: nn.Module, k: int = k) -> float:
            assert heldout_loss is not None
            return heldout_loss(k, model)

        result = train_reference(
            member.points,
            member.schedule,
            settings.model_copy(update={"lr": member.lr}),
            member.seed,
            watched if heldout_loss is not None else None,
            progress,
            device,
            posthoc,
            member.model,
        )
        if curves is not None:
            curves(k, 0, result.losses, result.lrs)
        results.append(result)
    return results
