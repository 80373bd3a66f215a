"""A user model for schedlab: a small residual conv net for images [C, H, W].

schedlab calls ``small_convnet(shape, **settings)`` with one sample's shape and the study's
[model] settings; the module predicts the noise: forward(x_t [B, *shape], t [B]) -> [B, *shape].
"""

import math

import torch
from torch import nn


class SmallConvNet(nn.Module):
    def __init__(self, channels: int, width: int, depth: int, timesteps: int = 100) -> None:
        super().__init__()
        self.time = nn.Embedding(timesteps, width)
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(depth))
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        self.scale = 1 / math.sqrt(depth)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(x) + self.time(t)[:, :, None, None]
        for block in self.blocks:
            h = h + self.scale * block(torch.nn.functional.silu(h))
        return self.out(torch.nn.functional.silu(h))


def small_convnet(shape: tuple[int, ...], width: int = 16, depth: int = 2) -> nn.Module:
    """A residual conv net of ``depth`` 3x3 convs, ``width`` channels."""
    if len(shape) != 3:
        raise ValueError(f"small_convnet needs images [C, H, W], got {list(shape)}")
    return SmallConvNet(shape[0], width, depth)
