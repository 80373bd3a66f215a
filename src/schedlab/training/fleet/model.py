"""K denoisers of one shape as one [K, P] tensor, with a hand-written forward and backward.

Layout: every linear layer of member k is one matrix [in + 1, out], its weight transposed with
its bias as the last row, and the activations that feed it carry a last column of ones. One
batched GEMM then computes a layer with its bias, and one GEMM gives the weight and the bias
gradient. The matrices of a member lie one after another in row k of ``weights`` (and of
``grad``), so clipping, AdamW and the EMA each see one contiguous vector per run.

Alignment: every member's slice of every tensor a GEMM reads or writes starts on a 64-byte
boundary (each layer matrix's offset in a row, each row, and each member's slab of every
activation buffer are padded to a multiple of 64 bytes). The CPU GEMM kernels treat the first
elements of a misaligned matrix differently, so without the padding a run's numbers depended
on its position in the fleet: with 296,450 float32 weights a row is 8 bytes longer than a
multiple of 64, and runs at odd positions differed from the same run at even positions after
one step (the output layer's weight gradient first). With it, a run's arithmetic is the same
at every position, in every fleet size and shard (tests/test_fleet_positions.py).

Why not autograd: on this model autograd allocates every activation and gradient afresh each
step (fresh pages cost as much on CPU as the arithmetic around the GEMMs), reduces each bias
gradient in a separate pass and runs each ReLU backward out of place. Here every buffer is
allocated once per batch size and reused; what is left besides the GEMMs is one ReLU per layer
forward and one masked add per block backward. ``tests/test_fleet.py`` checks losses and
gradients against autograd on the reference Denoiser, member by member.

Shapes: K members, B points per batch, d data dimensions, e embedding size, h hidden size.
"""

from __future__ import annotations

import math

import torch

from schedlab.model.denoiser import T_SCALE, X_SCALE, Denoiser, embedding_frequencies
from schedlab.model.denoiser import sinusoidal_embedding as embed

ALIGN_BYTES = 64  # a cache line, and the widest vector load (AVX-512)


def padded(count: int, dtype: torch.dtype) -> int:
    """``count`` elements rounded up to a whole number of ALIGN_BYTES."""
    per_line = ALIGN_BYTES // torch.empty((), dtype=dtype).element_size()
    return math.ceil(count / per_line) * per_line


def stacked(
    k: int, shape: tuple[int, ...], fill: float | None = None, **like: object
) -> torch.Tensor:
    """A [k, *shape] tensor whose k slabs each start on an ALIGN_BYTES boundary.

    The allocation itself is aligned (torch's CPU allocator aligns to 64 bytes); padding each
    slab to a multiple of 64 bytes keeps every later slab aligned too.
    """
    size = math.prod(shape)
    dtype = like["dtype"]
    assert isinstance(dtype, torch.dtype)
    stride = padded(size, dtype)
    base = torch.empty(k, stride, **like) if fill is None else torch.full((k, stride), fill, **like)
    inner = torch.empty(shape, device="meta").stride()
    return base.as_strided((k, *shape), (stride, *inner))


class _Buffers:
    """Activations and scratch space for one batch size, allocated once."""

    def __init__(self, fleet: FleetDenoiser, batch: int) -> None:
        k, d, e, h = fleet.k, fleet.in_dim, fleet.emb_size, fleet.hidden_size
        like = {"dtype": fleet.weights.dtype, "device": fleet.weights.device}
        self.xt = stacked(k, (batch, d), **like)  # noised points x_t
        self.scaled = stacked(k, (batch, d), **like)  # 25 x_t
        self.angles = stacked(k, (batch, d, e // 2), **like)  # 25 x_t f_i
        self.emb = stacked(k, (batch, (d + 1) * e + 1), fill=1.0, **like)  # last column: 1
        # The timestep embeddings [K B, e] are gathered straight into ``emb`` when its slabs
        # need no padding (a view across members exists), else into a scratch copied over.
        t_emb = self.emb[..., d * e : (d + 1) * e]  # [K, B, e]
        in_place = self.emb.is_contiguous()
        self.t_rows = t_emb.view(k * batch, e) if in_place else torch.empty(k * batch, e, **like)
        self.t_copy = None if in_place else t_emb
        self.relu = [
            stacked(k, (batch, h + 1), fill=1.0, **like) for _ in range(fleet.hidden_layers + 1)
        ]
        self.h = stacked(k, (batch, h), **like)
        self.pred = stacked(k, (batch, d), **like)
        self.grad_pred = stacked(k, (d, batch), **like)
        self.grad_out = stacked(k, (d, h + 1), **like)
        self.dh = stacked(k, (batch, h), **like)
        self.tmp = stacked(k, (batch, h), **like)
        self.losses = torch.empty(k, **like)


class FleetDenoiser:
    """K Denoisers' weights stacked as [K, P], trained by ``losses_and_gradients``."""

    def __init__(
        self,
        models: list[Denoiser],
        device: str | torch.device = "cpu",
        align: torch.dtype | None = None,
    ) -> None:
        """``align``: pad layers as for this (narrower) dtype, so that a float32 fleet and its
        bfloat16 compute copy share one layout (bf16-mixed precision)."""
        if not models:
            raise ValueError("a fleet needs at least one model")
        first = models[0]
        self.k = len(models)
        self.in_dim = first.in_dim
        self.emb_size = first.emb_size
        self.hidden_size = first.input.out_features
        self.hidden_layers = len(first.blocks)
        h, d = self.hidden_size, self.in_dim
        self.shapes = [((d + 1) * self.emb_size + 1, h)]
        self.shapes += [(h + 1, h)] * self.hidden_layers + [(h + 1, d)]
        dtype = first.input.weight.dtype
        self.offsets = [0]
        for rows, cols in self.shapes:
            self.offsets.append(self.offsets[-1] + padded(rows * cols, align or dtype))
        # Padding between layers stays 0 in weights, gradients, moments and the EMA.
        self.weights = torch.zeros(self.k, self.offsets[-1], dtype=dtype, device=device)
        self.grad = torch.zeros_like(self.weights)
        self.layers = self.views(self.weights)
        self.grad_layers = self.views(self.grad)
        for k, model in enumerate(models):
            self.load_member(k, model)
        self.freqs = embedding_frequencies(self.emb_size, dtype, self.weights.device)
        self.t_table = torch.empty(0)
        self._buffers: dict[int, _Buffers] = {}

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """The layer matrices [K, in + 1, out] inside a [K, P] tensor of this layout."""
        return [
            flat[:, offset : offset + rows * cols].view(self.k, rows, cols)
            for offset, (rows, cols) in zip(self.offsets, self.shapes, strict=False)
        ]

    def load_member(self, k: int, model: Denoiser) -> None:
        with torch.no_grad():
            for layer, linear in zip(self.layers, _linears(model), strict=True):
                layer[k, :-1].copy_(linear.weight.T)
                layer[k, -1].copy_(linear.bias)

    def member(self, k: int, like: Denoiser, weights: torch.Tensor | None = None) -> Denoiser:
        """Member k (of ``weights``, default the fleet's own) copied into ``like``."""
        layers = self.layers if weights is None else self.views(weights)
        with torch.no_grad():
            for layer, linear in zip(layers, _linears(like), strict=True):
                linear.weight.copy_(layer[k, :-1].T)
                linear.bias.copy_(layer[k, -1])
        return like

    def _buffers_for(self, batch: int, timesteps: int) -> _Buffers:
        if self.t_table.shape[0] != timesteps:
            steps = torch.arange(timesteps, dtype=self.weights.dtype, device=self.weights.device)
            self.t_table = embed(steps, self.emb_size, T_SCALE)  # [T, e]
        if batch not in self._buffers:
            self._buffers[batch] = _Buffers(self, batch)
        return self._buffers[batch]

    def _forward(self, buf: _Buffers, t: torch.Tensor) -> None:
        """Each member's noise prediction on ``buf.xt`` at timesteps ``t`` [K, B] into
        ``buf.pred``, keeping the activations the backward pass reads."""
        k, batch, d, e = self.k, buf.xt.shape[1], self.in_dim, self.emb_size
        torch.mul(buf.xt, X_SCALE, out=buf.scaled)  # [K, B, d]
        torch.mul(buf.scaled.unsqueeze(-1), self.freqs, out=buf.angles)  # [K, B, d, e/2]
        sincos = buf.emb[..., : d * e].unflatten(-1, (d, 2, e // 2))  # [K, B, d, sin|cos, e/2]
        torch.sin(buf.angles, out=sincos[..., 0, :])
        torch.cos(buf.angles, out=sincos[..., 1, :])
        torch.index_select(self.t_table, 0, t.flatten(), out=buf.t_rows)  # [K B, e]
        if buf.t_copy is not None:
            buf.t_copy.copy_(buf.t_rows.view(k, batch, e))  # [K, B, e]
        # h = [emb, 1] W_in; h += [relu(h), 1] W_i per block; pred = [relu(h), 1] W_out.
        torch.bmm(buf.emb, self.layers[0], out=buf.h)  # [K, B, h]
        for i, relu in enumerate(buf.relu):
            torch.clamp_min(buf.h, 0, out=relu[..., : self.hidden_size])  # of [K, B, h + 1]
            if i < self.hidden_layers:
                buf.h.baddbmm_(relu, self.layers[1 + i])  # [K, B, h]
        torch.bmm(buf.relu[-1], self.layers[-1], out=buf.pred)  # [K, B, d]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: torch.Tensor, timesteps: int) -> torch.Tensor:
        """Each member's noise prediction on its x_t [K, B, d] at timesteps t [K, B] (of a
        ``timesteps``-step diffusion). The returned tensor is reused by the next call."""
        buf = self._buffers_for(x.shape[1], timesteps)
        buf.xt.copy_(x)
        self._forward(buf, t)
        return buf.pred

    @torch.no_grad()
    def losses_and_gradients(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        eps: torch.Tensor,
        sqrt_abar: torch.Tensor,
        sqrt_one_minus_abar: torch.Tensor,
    ) -> torch.Tensor:
        """Each member's noise-prediction MSE on its batch ([K]); their gradients into ``grad``.

        x0, eps: [K, B, d]; t: [K, B]. The returned tensor is reused by the next call.
        """
        d, batch, hidden = self.in_dim, x0.shape[1], self.hidden_size
        buf = self._buffers_for(batch, sqrt_abar.shape[0])
        # x_t in the reference's order of operations, then the forward pass.
        torch.mul(sqrt_abar[t].unsqueeze(-1), x0, out=buf.xt)  # [K, B, d]
        buf.xt.add_(sqrt_one_minus_abar[t].unsqueeze(-1) * eps)
        self._forward(buf, t)
        last = buf.relu[-1]  # [K, B, h + 1]
        diff = buf.pred.sub_(eps)  # [K, B, d]
        torch.mean(diff.square(), dim=(1, 2), out=buf.losses)  # [K]

        # Backward of the sum of the K losses: d loss_k / d pred = 2 diff / (d B).
        torch.mul(diff.transpose(1, 2), 2.0 / (d * batch), out=buf.grad_pred)  # [K, d, B]
        torch.bmm(buf.grad_pred, last, out=buf.grad_out)  # [K, d, h + 1]
        self.grad_layers[-1].copy_(buf.grad_out.transpose(1, 2))  # [K, h + 1, d]
        w_out = self.layers[-1][:, :-1].transpose(1, 2)  # [K, d, h]
        torch.bmm(buf.grad_pred.transpose(1, 2), w_out, out=buf.tmp)  # [K, B, h]
        torch.ops.aten.threshold_backward.grad_input(
            buf.tmp, last[..., :hidden], 0, grad_input=buf.dh
        )  # dh = tmp where relu(h) > 0: [K, B, h]
        for i in reversed(range(self.hidden_layers)):
            relu = buf.relu[i]  # the block's input [K, B, h + 1]
            torch.bmm(relu.transpose(1, 2), buf.dh, out=self.grad_layers[1 + i])  # [K, h+1, h]
            w = self.layers[1 + i][:, :-1].transpose(1, 2)  # [K, h, h]
            torch.bmm(buf.dh, w, out=buf.tmp)  # [K, B, h]
            torch.ops.aten.threshold_backward.grad_input(
                buf.tmp, relu[..., :hidden], 0, grad_input=buf.tmp
            )
            buf.dh.add_(buf.tmp)  # the residual path adds the block's gradient
        torch.bmm(buf.emb.transpose(1, 2), buf.dh, out=self.grad_layers[0])  # [K, (d+1)e+1, h]
        return buf.losses


def _linears(model: Denoiser) -> list[torch.nn.Linear]:
    return [model.input, *(block.linear for block in model.blocks), model.output]
