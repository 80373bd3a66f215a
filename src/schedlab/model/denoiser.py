"""The reference denoiser: sinusoidal embeddings of each coordinate and of t, then a residual MLP.

Written for points of any dimension d (the reference's are 2D): each coordinate and the
timestep get their own embedding, concatenated to (d + 1) x emb_size inputs, and the output
predicts d noise values. At the reference sizes (d 2, embedding 128, hidden 256, 3 blocks) it
has 296,450 parameters.
"""

from __future__ import annotations

import math

import numpy as np
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
    """Embeddings of the d coordinates and the integer timestep: x [..., d] -> [..., (d+1) size]."""
    coordinates = [sinusoidal_embedding(x[..., i], size, X_SCALE) for i in range(x.shape[-1])]
    return torch.cat((*coordinates, sinusoidal_embedding(t.to(x.dtype), size, T_SCALE)), dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(size, size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(torch.relu(h))


class Denoiser(nn.Module):
    """Predicts the noise added to a point of ``in_dim`` coordinates at timestep t."""

    def __init__(
        self, emb_size: int = 128, hidden_size: int = 256, hidden_layers: int = 3, in_dim: int = 2
    ):
        super().__init__()
        if emb_size < 4 or emb_size % 2:
            raise ValueError(f"emb_size must be an even number >= 4, got {emb_size}")
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, got {in_dim}")
        self.emb_size, self.in_dim = emb_size, in_dim
        self.input = nn.Linear((in_dim + 1) * emb_size, hidden_size)
        self.blocks = nn.ModuleList(ResidualBlock(hidden_size) for _ in range(hidden_layers))
        self.output = nn.Linear(hidden_size, in_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.input(embed_inputs(x, t, self.emb_size))
        for block in self.blocks:
            h = block(h)
        return self.output(torch.relu(h))


def mlp(
    shape: tuple[int, ...], emb_size: int = 128, hidden_size: int = 256, hidden_layers: int = 3
) -> Denoiser:
    """The registry's factory of ``mlp``: a Denoiser for vectors of shape [d]."""
    return Denoiser(emb_size, hidden_size, hidden_layers, in_dim=shape[0])


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weights_vector(model: nn.Module) -> np.ndarray:
    """Every parameter, flattened in ``parameters()`` order, as one numpy vector (for the store)."""
    with torch.no_grad():
        return torch.cat([p.detach().cpu().flatten() for p in model.parameters()]).numpy()


def load_weights_vector(model: nn.Module, vector: np.ndarray) -> nn.Module:
    """The inverse of ``weights_vector``: ``vector`` copied into ``model``'s parameters."""
    if vector.size != parameter_count(model):
        raise ValueError(
            f"stored weights have {vector.size} values, the model has {parameter_count(model)}"
        )
    flat = torch.as_tensor(vector)
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
    return model
