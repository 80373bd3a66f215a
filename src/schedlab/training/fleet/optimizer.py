"""AdamW and gradient clipping for a fleet's [K, P] weights, one run per row."""

from __future__ import annotations

import torch


class FleetAdamW:
    """AdamW for a fleet's [K, P] weights, with a learning rate and a clip per run.

    Each run is updated by torch's own fused AdamW kernel (one pass over weights, gradients
    and moments instead of a dozen) on its row, with its own LR: the kernel of
    torch.optim.AdamW(fused=True), with bias corrections in float64.
    """

    def __init__(
        self,
        weights: torch.Tensor,
        grad: torch.Tensor,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.weights, self.grad = weights, grad
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        self.exp_avg = torch.zeros_like(weights)
        self.exp_avg_sq = torch.zeros_like(weights)
        self.step_count = torch.zeros((), dtype=torch.float32, device=weights.device)
        self._rows = [
            ([weights[k]], [grad[k]], [self.exp_avg[k]], [self.exp_avg_sq[k]])
            for k in range(weights.shape[0])
        ]

    @torch.no_grad()
    def step(self, lr: list[float], clip_coef: torch.Tensor) -> None:
        """One update; ``lr[k]`` is run k's LR (0 freezes it), ``clip_coef[k]`` its grad factor.

        In float32 the clip rides in the kernel (as a gradient scale it divides by), so clipped
        gradients are never written; the kernel takes only a float32 scale, so float64 fleets
        scale their gradients first.
        """
        self.step_count += 1
        beta1, beta2 = self.betas
        if self.grad.dtype == torch.float32:
            scales: list[torch.Tensor | None] = list(1.0 / clip_coef)
        else:
            self.grad.mul_(clip_coef.unsqueeze(1))
            scales = [None] * len(self._rows)
        for k, (weights, grad, exp_avg, exp_avg_sq) in enumerate(self._rows):
            if lr[k] == 0:
                continue
            torch._fused_adamw_(
                weights,
                grad,
                exp_avg,
                exp_avg_sq,
                [],
                [self.step_count],
                lr=lr[k],
                beta1=beta1,
                beta2=beta2,
                weight_decay=self.weight_decay,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
                grad_scale=scales[k],
                found_inf=None,
            )


@torch.no_grad()
def clip_coefficients(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """clip_grad_norm_'s factor for each run of [K, P] gradients: min(1, max_norm / norm)."""
    norms = torch.linalg.vector_norm(grad, dim=1)
    return (max_norm / (norms + 1e-6)).clamp(max=1.0)
