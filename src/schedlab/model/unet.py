"""A small convolutional UNet denoiser for images [C, H, W] (the built-in model ``unet``).

The DDPM paper's shape at toy size: a sinusoidal timestep embedding through a two-layer MLP,
residual blocks (GroupNorm, SiLU, 3x3 conv, the embedding added per channel), ``levels``
resolutions with a stride-2 conv down and a nearest-neighbour upsample + conv back up, the
skip of each level concatenated on the way up. No batch norm and no buffers: the module is
fully described by its parameters, so K copies train as one ``[K, P]`` fleet through
``torch.func.functional_call`` + ``vmap`` (``training/fleet/autodiff.py``).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from schedlab.model.denoiser import T_SCALE, sinusoidal_embedding

GROUPS = 8  # GroupNorm's groups; every width is a multiple of it


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(GROUPS, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(torch.nn.functional.silu(self.norm1(x)))  # [B, c_out, H, W]
        h = h + self.emb(e)[:, :, None, None]
        h = self.conv2(torch.nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """Predicts the noise in x_t [B, C, H, W] at integer timesteps t [B]."""

    def __init__(
        self, shape: tuple[int, ...], channels: int = 32, levels: int = 2, emb_size: int = 64
    ) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"unet needs images [C, H, W], got samples of shape {list(shape)}")
        c, height, width = shape
        scale = 2 ** (levels - 1)
        if levels < 1 or height % scale or width % scale:
            raise ValueError(
                f"unet with {levels} levels needs H and W divisible by {scale}, "
                f"got {height}x{width}"
            )
        if channels < GROUPS or channels % GROUPS:
            raise ValueError(f"channels must be a multiple of {GROUPS}, got {channels}")
        if emb_size < 4 or emb_size % 2:
            raise ValueError(f"emb_size must be an even number >= 4, got {emb_size}")
        self.emb_size = emb_size
        self.time = nn.Sequential(
            nn.Linear(emb_size, emb_size), nn.SiLU(), nn.Linear(emb_size, emb_size)
        )
        widths = [channels * 2**i for i in range(levels)]
        self.stem = nn.Conv2d(c, widths[0], 3, padding=1)
        self.down = nn.ModuleList(ResBlock(w, w, emb_size) for w in widths)
        self.pool = nn.ModuleList(
            nn.Conv2d(w, w2, 3, stride=2, padding=1) for w, w2 in itertools.pairwise(widths)
        )
        self.mid = ResBlock(widths[-1], widths[-1], emb_size)
        self.lift = nn.ModuleList(
            nn.Conv2d(w2, w, 3, padding=1) for w, w2 in itertools.pairwise(widths)
        )
        self.up = nn.ModuleList(ResBlock(2 * w, w, emb_size) for w in widths)
        self.head = nn.Sequential(
            _norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], c, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.time(sinusoidal_embedding(t.to(x.dtype), self.emb_size, T_SCALE))  # [B, emb]
        h = self.stem(x)  # [B, w0, H, W]
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, e)
            skips.append(h)
            if i < len(self.pool):
                h = self.pool[i](h)  # [B, w_{i+1}, H / 2^(i+1), W / 2^(i+1)]
        h = self.mid(h, e)
        for i in reversed(range(len(self.up))):
            if i < len(self.lift):
                h = self.lift[i](h.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1))
            h = self.up[i](torch.cat((h, skips[i]), dim=1), e)
        return self.head(h)
