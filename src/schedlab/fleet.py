"""K denoisers of one shape as one [K, P] tensor, with a hand-written forward and backward.

Layout: every linear layer of member k is one matrix [in + 1, out], its weight transposed with
its bias as the last row, and the activations that feed it carry a last column of ones. One
batched GEMM then computes a layer with its bias, and one GEMM gives the weight and the bias
gradient. The matrices of a member lie one after another in row k of ``weights`` (and of
``grad``), so clipping, AdamW and the EMA each see one contiguous vector per run.

Why not autograd: on this model autograd allocates every activation and gradient afresh each
step (fresh pages cost as much on CPU as the arithmetic around the GEMMs), reduces each bias
gradient in a separate pass and runs each ReLU backward out of place. Here every buffer is
allocated once per batch size and reused; what is left besides the GEMMs is one ReLU per layer
forward and one masked add per block backward. ``tests/test_fleet.py`` checks losses and
gradients against autograd on the reference Denoiser, member by member.
"""

from __future__ import annotations

import torch

from schedlab.model import (
    T_SCALE,
    X_SCALE,
    Denoiser,
    embedding_frequencies,
    sinusoidal_embedding,
)


class _Buffers:
    """Activations and scratch space for one batch size, allocated once."""

    def __init__(self, fleet: FleetDenoiser, batch: int) -> None:
        k, e, h = fleet.k, fleet.emb_size, fleet.hidden_size
        like = {"dtype": fleet.weights.dtype, "device": fleet.weights.device}
        self.xt = torch.empty(k, batch, 2, **like)
        self.scaled = torch.empty(k, batch, 2, **like)
        self.angles = torch.empty(k, batch, 2, e // 2, **like)
        self.emb = torch.ones(k, batch, 3 * e + 1, **like)  # last column: the bias input
        self.relu = [torch.ones(k, batch, h + 1, **like) for _ in range(fleet.hidden_layers + 1)]
        self.h = torch.empty(k, batch, h, **like)
        self.pred = torch.empty(k, batch, 2, **like)
        self.grad_pred = torch.empty(k, 2, batch, **like)
        self.grad_out = torch.empty(k, 2, h + 1, **like)
        self.dh = torch.empty(k, batch, h, **like)
        self.tmp = torch.empty(k, batch, h, **like)
        self.losses = torch.empty(k, **like)


class FleetDenoiser:
    """K Denoisers' weights stacked as [K, P], trained by ``losses_and_gradients``."""

    def __init__(self, models: list[Denoiser], device: str | torch.device = "cpu") -> None:
        if not models:
            raise ValueError("a fleet needs at least one model")
        first = models[0]
        self.k = len(models)
        self.emb_size = first.emb_size
        self.hidden_size = first.input.out_features
        self.hidden_layers = len(first.blocks)
        h = self.hidden_size
        self.shapes = [(3 * self.emb_size + 1, h)]
        self.shapes += [(h + 1, h)] * self.hidden_layers + [(h + 1, 2)]
        dtype = first.input.weight.dtype
        size = sum(rows * cols for rows, cols in self.shapes)
        self.weights = torch.empty(self.k, size, dtype=dtype, device=device)
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
        out, offset = [], 0
        for rows, cols in self.shapes:
            out.append(flat[:, offset : offset + rows * cols].view(self.k, rows, cols))
            offset += rows * cols
        return out

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
            self.t_table = sinusoidal_embedding(steps, self.emb_size, T_SCALE)
        if batch not in self._buffers:
            self._buffers[batch] = _Buffers(self, batch)
        return self._buffers[batch]

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

        x0, eps: [K, B, 2]; t: [K, B]. The returned tensor is reused by the next call.
        """
        batch, e = x0.shape[1], self.emb_size
        buf = self._buffers_for(batch, sqrt_abar.shape[0])
        # x_t and the embeddings, in the reference's order of operations.
        torch.mul(sqrt_abar[t].unsqueeze(-1), x0, out=buf.xt)
        buf.xt.add_(sqrt_one_minus_abar[t].unsqueeze(-1) * eps)
        torch.mul(buf.xt, X_SCALE, out=buf.scaled)
        torch.mul(buf.scaled.unsqueeze(-1), self.freqs, out=buf.angles)
        sincos = buf.emb[..., : 2 * e].view(self.k, batch, 2, 2, e // 2)
        torch.sin(buf.angles, out=sincos[:, :, :, 0])
        torch.cos(buf.angles, out=sincos[:, :, :, 1])
        t_emb = buf.emb[..., 2 * e : 3 * e]
        torch.index_select(self.t_table, 0, t.flatten(), out=t_emb.view(-1, e))

        # Forward: h = [emb, 1] W_in; h += [relu(h), 1] W_i per block; pred = [relu(h), 1] W_out.
        hidden = self.hidden_size
        torch.bmm(buf.emb, self.layers[0], out=buf.h)
        for i, relu in enumerate(buf.relu):
            torch.clamp_min(buf.h, 0, out=relu[..., :hidden])
            if i < self.hidden_layers:
                buf.h.baddbmm_(relu, self.layers[1 + i])
        last = buf.relu[-1]
        torch.bmm(last, self.layers[-1], out=buf.pred)
        diff = buf.pred.sub_(eps)
        torch.mean(diff.square(), dim=(1, 2), out=buf.losses)

        # Backward of the sum of the K losses: d loss_k / d pred = 2 diff / (2 B).
        torch.mul(diff.transpose(1, 2), 1.0 / batch, out=buf.grad_pred)
        torch.bmm(buf.grad_pred, last, out=buf.grad_out)
        self.grad_layers[-1].copy_(buf.grad_out.transpose(1, 2))
        torch.bmm(
            buf.grad_pred.transpose(1, 2), self.layers[-1][:, :-1].transpose(1, 2), out=buf.tmp
        )
        torch.ops.aten.threshold_backward.grad_input(
            buf.tmp, last[..., :hidden], 0, grad_input=buf.dh
        )
        for i in reversed(range(self.hidden_layers)):
            relu = buf.relu[i]
            torch.bmm(relu.transpose(1, 2), buf.dh, out=self.grad_layers[1 + i])
            torch.bmm(buf.dh, self.layers[1 + i][:, :-1].transpose(1, 2), out=buf.tmp)
            torch.ops.aten.threshold_backward.grad_input(
                buf.tmp, relu[..., :hidden], 0, grad_input=buf.tmp
            )
            buf.dh.add_(buf.tmp)
        torch.bmm(buf.emb.transpose(1, 2), buf.dh, out=self.grad_layers[0])
        return buf.losses


def _linears(model: Denoiser) -> list[torch.nn.Linear]:
    return [model.input, *(block.linear for block in model.blocks), model.output]
