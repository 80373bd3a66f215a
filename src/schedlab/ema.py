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


class EMA:
    def __init__(self, model: nn.Module, beta: float, every: int, warmup: int) -> None:
        self.model = model
        self.ema_model = copy.deepcopy(model).requires_grad_(False)
        self.beta, self.every, self.warmup = beta, every, warmup
        self._pairs = list(zip(self.ema_model.parameters(), model.parameters(), strict=True))

    @torch.no_grad()
    def update(self, step: int) -> None:
        if step % self.every:
            return
        decay = ema_decay(step, self.beta, self.warmup)
        for ema_p, p in self._pairs:
            if decay is None:
                ema_p.copy_(p)
            else:
                ema_p.lerp_(p, 1.0 - decay)
