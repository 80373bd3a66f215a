"""K copies of ANY ``nn.Module`` as one [K, P] tensor, trained through autograd.

Layout: member k's parameters lie one after another in row k of ``weights`` (and ``grad``),
each starting on a 64-byte boundary (``model.padded``), so clipping, AdamW, the EMA, post-hoc
EMA and checkpoints see one contiguous vector per run, exactly as with the MLP's kernel. The
forward and backward go through ``torch.func.functional_call`` on per-parameter views of a row.

Two ways to compute, one result per member:
- ``vectorized`` (the default on a GPU): ``torch.func.vmap`` over the K rows, one batched
  computation (a conv over K members becomes one grouped conv: K runs for a few launches).
- per member (the default on a CPU): member k's forward and backward alone, on its own views.
  Measured on this 2-core CPU with the 379k-parameter UNet on 8x8 digits (batch 256, one
  thread): the vmapped step cost 306 ms per member against 199 ms for the module alone, and its
  round-off depended on K and the member's position (a grouped conv's kernel is chosen by its
  group count). Per member, a run's arithmetic is the module's own, bitwise the same at every
  position and fleet size, and the shards (``shards.py``) run members side by side.

Shapes: K members, B samples per batch, ``*s`` one sample's shape.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from schedlab.model.denoiser import Denoiser
from schedlab.model.diffusion import per_sample
from schedlab.training.fleet.model import FleetDenoiser, padded


class FleetModule:
    """K modules of one architecture stacked as [K, P], trained by ``losses_and_gradients``."""

    def __init__(
        self,
        models: list[nn.Module],
        device: str | torch.device = "cpu",
        align: torch.dtype | None = None,
        vectorized: bool | None = None,
    ) -> None:
        """``align``: pad parameters as for this (narrower) dtype, so that a float32 fleet and
        its bfloat16 compute copy share one layout (bf16-mixed precision)."""
        if not models:
            raise ValueError("a fleet needs at least one model")
        device = torch.device(device)
        self.k = len(models)
        self.base = copy.deepcopy(models[0]).to(device)  # the module functional_call runs
        named = list(self.base.named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        dtype = named[0][1].dtype
        self.offsets = [0]
        for shape in self.shapes:
            self.offsets.append(self.offsets[-1] + padded(_numel(shape), align or dtype))
        self.weights = torch.zeros(self.k, self.offsets[-1], dtype=dtype, device=device)
        self.grad = torch.zeros_like(self.weights)
        self.vectorized = device.type == "cuda" if vectorized is None else vectorized
        for k, model in enumerate(models):
            self.load_member(k, model)
        self.losses = torch.empty(self.k, dtype=dtype, device=device)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each parameter as [K, *shape] inside a [K, P] tensor of this layout."""
        return {
            name: flat[:, offset : offset + _numel(shape)].view(self.k, *shape)
            for name, offset, shape in zip(self.names, self.offsets, self.shapes, strict=False)
        }

    def row(self, flat: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters as views into row k of ``flat``."""
        return {
            name: flat[k, offset : offset + _numel(shape)].view(shape)
            for name, offset, shape in zip(self.names, self.offsets, self.shapes, strict=False)
        }

    def load_member(self, k: int, model: nn.Module) -> None:
        with torch.no_grad():
            row = self.row(self.weights, k).values()
            for view, p in zip(row, _parameters(model, self.names), strict=True):
                view.copy_(p.detach().to(view.device))

    def member(self, k: int, like: nn.Module, weights: torch.Tensor | None = None) -> nn.Module:
        """Member k (of ``weights``, default the fleet's own) copied into ``like``."""
        row = self.row(self.weights if weights is None else weights, k)
        with torch.no_grad():
            for view, p in zip(row.values(), _parameters(like, self.names), strict=True):
                p.copy_(view)
        return like

    def _loss(
        self,
        params: dict[str, torch.Tensor],
        x0: torch.Tensor,
        t: torch.Tensor,
        eps: torch.Tensor,
        sqrt_abar: torch.Tensor,
        sqrt_one_minus_abar: torch.Tensor,
    ) -> torch.Tensor:
        """One member's noise-prediction MSE on x0, eps [B, *s] at t [B] (the loop's loss)."""
        xt = per_sample(sqrt_abar[t], x0) * x0 + per_sample(sqrt_one_minus_abar[t], x0) * eps
        return F.mse_loss(functional_call(self.base, params, (xt, t)), eps)

    def losses_and_gradients(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        eps: torch.Tensor,
        sqrt_abar: torch.Tensor,
        sqrt_one_minus_abar: torch.Tensor,
    ) -> torch.Tensor:
        """Each member's noise-prediction MSE on its batch ([K]); their gradients into ``grad``.

        x0, eps: [K, B, *s]; t: [K, B]. The returned tensor is reused by the next call.
        """
        coefs = (sqrt_abar, sqrt_one_minus_abar)
        with torch.enable_grad():
            if self.vectorized:
                params = {
                    n: v.detach().requires_grad_() for n, v in self.views(self.weights).items()
                }
                losses = vmap(self._loss, in_dims=(0, 0, 0, 0, None, None))(
                    params, x0, t, eps, *coefs
                )  # [K]
                grads = torch.autograd.grad(losses.sum(), list(params.values()))
                for view, g in zip(self.views(self.grad).values(), grads, strict=True):
                    view.copy_(g)
                self.losses.copy_(losses.detach())
                return self.losses
            for k in range(self.k):
                params = {
                    n: v.detach().requires_grad_() for n, v in self.row(self.weights, k).items()
                }
                loss = self._loss(params, x0[k], t[k], eps[k], *coefs)
                grads = torch.autograd.grad(loss, list(params.values()))
                for view, g in zip(self.row(self.grad, k).values(), grads, strict=True):
                    view.copy_(g)
                self.losses[k] = loss.detach()
        return self.losses

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: torch.Tensor, timesteps: int) -> torch.Tensor:
        """Each member's noise prediction on its x_t [K, B, *s] at timesteps t [K, B]."""
        del timesteps  # the module embeds t itself
        if self.vectorized:
            params = self.views(self.weights)
            return vmap(lambda p, xk, tk: functional_call(self.base, p, (xk, tk)))(params, x, t)
        return torch.stack(
            [
                functional_call(self.base, self.row(self.weights, k), (x[k], t[k]))
                for k in range(self.k)
            ]
        )


FleetModel = FleetDenoiser | FleetModule


def fleet_of(
    models: list[nn.Module], device: str | torch.device = "cpu", align: torch.dtype | None = None
) -> FleetModel:
    """The fleet for ``models``: the MLP's hand-written kernel for schedlab's Denoiser (its
    fast path), the autograd fleet for any other module."""
    if all(type(m) is Denoiser for m in models):
        return FleetDenoiser(models, device, align)  # type: ignore[arg-type]
    return FleetModule(models, device, align)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _parameters(model: nn.Module, names: list[str]) -> Iterator[torch.Tensor]:
    params = dict(model.named_parameters())
    if list(params) != names:
        raise ValueError("every member of a fleet needs the same architecture")
    return iter(params.values())
