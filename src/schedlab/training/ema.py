"""EMA of the weights as the reference defines it (ema_pytorch's EMA with its defaults).

For optimizer step c (0-based), the EMA is touched when c % every == 0: up to c = warmup it
copies the weights; after that it moves towards them with
decay = min(beta, 1 - (1 + c - warmup) ** (-2/3)).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(step: int, beta: float, warmup: int) -> float | None:
    """The decay applied at optimizer step ``step``; None means copy the weights."""
    if step <= warmup:
        return None
    return min(beta, 1.0 - (1.0 + step - warmup) ** (-2.0 / 3.0))


class TensorEMA:
    """The EMA of some tensors (a model's parameters, or a fleet's [K, P] weights)."""

    def __init__(
        self,
        sources: list[torch.Tensor],
        beta: float,
        every: int,
        warmup: int,
        averages: list[torch.Tensor] | None = None,
    ) -> None:
        """``averages`` start as copies of the sources, or are given (holding such copies)."""
        self.sources = sources
        self.averages = averages or [s.detach().clone() for s in sources]
        self.beta, self.every, self.warmup = beta, every, warmup

    @torch.no_grad()
    def update(self, step: int) -> None:
        if step % self.every:
            return
        decay = ema_decay(step, self.beta, self.warmup)
        for average, source in zip(self.averages, self.sources, strict=True):
            if decay is None:
                average.copy_(source)
            else:
                average.lerp_(source, 1.0 - decay)


class EMA(TensorEMA):
    """The EMA of a model, kept in a copy of it (``ema_model``)."""

    def __init__(self, model: nn.Module, beta: float, every: int, warmup: int) -> None:
        self.ema_model = copy.deepcopy(model).requires_grad_(False)
        averages = list(self.ema_model.parameters())
        super().__init__(list(model.parameters()), beta, every, warmup, averages)
