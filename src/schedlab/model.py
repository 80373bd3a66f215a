"""The reference denoiser: sinusoidal embeddings of x, y and t, then a residual MLP.

At the default sizes (embedding 128, hidden 256, 3 blocks) it has 296,450 parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

X_SCALE = 25.0
T_SCALE = 1.0


def sinusoidal_embedding(v: torch.Tensor, size: int, scale: float) -> torch.Tensor:
    """[sin(s v f_i) ..., cos(s v f_i) ...] with f_i = exp(-ln(10000) i / (size/2 - 1))."""
    half = size // 2
    freqs = torch.exp(
        -math.log(10000.0) / (half - 1) * torch.arange(half, dtype=v.dtype, device=v.device)
    )
    angles = (scale * v).unsqueeze(-1) * freqs
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


class FleetDenoiser(nn.Module):
    """K denoisers of one shape with their weights stacked ([K, ...]): one batched forward.

    ``weights`` holds the stacked tensors in the order of Denoiser.parameters() (input weight
    and bias, each block's, output's); a member converts to and from a Denoiser exactly. Runs
    never mix: every product is a matmul batched over K. Weight matrices are stored transposed,
    [K, in, out]: that is the layout in which autograd's batched matmul produces their
    gradients, so no gradient is ever copied into another layout (on CPU such a transposing
    copy cost as much as a third of a fleet step).
    """

    def __init__(self, models: list[Denoiser]) -> None:
        super().__init__()
        if not models:
            raise ValueError("a fleet needs at least one model")
        self.emb_size = models[0].emb_size
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([_fleet_layout(p.detach()) for p in group]).contiguous())
            for group in zip(*(m.parameters() for m in models), strict=True)
        )

    @staticmethod
    def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(b.unsqueeze(1), x, w)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [K, B, 2], t: [K, B] -> predicted noise [K, B, 2]."""
        w = list(self.weights)
        h = self._linear(embed_inputs(x, t, self.emb_size), w[0], w[1])
        for i in range(2, len(w) - 2, 2):
            h = h + self._linear(torch.relu(h), w[i], w[i + 1])
        return self._linear(torch.relu(h), w[-2], w[-1])

    def member(self, k: int, like: Denoiser) -> Denoiser:
        """Member k's weights copied into ``like`` (a Denoiser of the same shape)."""
        with torch.no_grad():
            for target, stacked in zip(like.parameters(), self.weights, strict=True):
                target.copy_(_fleet_layout(stacked[k]))
        return like


def _fleet_layout(p: torch.Tensor) -> torch.Tensor:
    """nn.Linear's [out, in] weight <-> the fleet's [in, out]; biases stay as they are."""
    return p.T if p.dim() == 2 else p
