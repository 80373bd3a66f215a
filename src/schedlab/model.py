"""The reference denoiser: sinusoidal embeddings of x, y and t, then a residual MLP.

At the default sizes (embedding 128, hidden 256, 3 blocks) it has 296,450 parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

X_SCALE = 25.0
T_SCALE = 1.0


def embedding_frequencies(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """f_i = exp(-ln(10000) i / (size/2 - 1)), i < size/2."""
    half = size // 2
    return torch.exp(
        -math.log(10000.0) / (half - 1) * torch.arange(half, dtype=dtype, device=device)
    )


def sinusoidal_embedding(v: torch.Tensor, size: int, scale: float) -> torch.Tensor:
    """[sin(s v f_i) ..., cos(s v f_i) ...] with f_i = exp(-ln(10000) i / (size/2 - 1))."""
    angles = (scale * v).unsqueeze(-1) * embedding_frequencies(size, v.dtype, v.device)
    return torch.cat((torch.sin(angles), torch.cos(angles)), dim=-1)


def embed_inputs(x: torch.Tensor, t: torch.Tensor, size: int) -> torch.Tensor:
    """Concatenated embeddings of the two coordinates and the integer timestep: [..., 3 size]."""
    t = t.to(x.dtype)
    return torch.cat(
        (
            sinusoidal_embedding(x[..., 0], size, X_SCALE),
            sinusoidal_embedding(x[..., 1], size, X_SCALE),
            sinusoidal_embedding(t, size, T_SCALE),
        ),
        dim=-1,
    )


class ResidualBlock(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(size, size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(torch.relu(h))


class Denoiser(nn.Module):
    """Predicts the noise added to a 2D point at timestep t."""

    def __init__(self, emb_size: int = 128, hidden_size: int = 256, hidden_layers: int = 3):
        super().__init__()
        if emb_size < 4 or emb_size % 2:
            raise ValueError(f"emb_size must be an even number >= 4, got {emb_size}")
        self.emb_size = emb_size
        self.input = nn.Linear(3 * emb_size, hidden_size)
        self.blocks = nn.ModuleList(ResidualBlock(hidden_size) for _ in range(hidden_layers))
        self.output = nn.Linear(hidden_size, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.input(embed_inputs(x, t, self.emb_size))
        for block in self.blocks:
            h = block(h)
        return self.output(torch.relu(h))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
