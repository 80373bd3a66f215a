"""AdamW and gradient clipping for a fleet's [K, P] weights, one run per row."""

from __future__ import annotations

import torch

from schedlab.training.fleet.compiled import CompiledOrEager


class FleetAdamW:
    """AdamW for a fleet's [K, P] weights, with a learning rate and a clip per run.

    Two ways to one result (float64: equal to torch.optim.AdamW per run to round-off):
    - ``per_row`` (CPU): each run by torch's own fused AdamW kernel on its row, with its own
      LR, a 0-d tensor read by the kernel (no host value per step). The kernel is one pass over
      weights, gradients and moments; K calls over the rows cost what one call over the whole
      [K, P] does (``benchmarks/engine.py``, its ``adamw_ms``), the pass being bound by memory.
    - ``one_pass`` (GPU): ``adamw_one_pass`` over [K, P] with the LRs as a [K, 1] tensor, a
      dozen kernels eagerly whatever K is (instead of K launches), one under torch.compile.
    A run whose LR is 0 (frozen: it diverged) is left untouched, moments included.
    """

    def __init__(
        self,
        weights: torch.Tensor,
        grad: torch.Tensor,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        one_pass: bool = False,
        use_compile: bool = False,
    ) -> None:
        self.weights, self.grad = weights, grad
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        self.exp_avg = torch.zeros_like(weights)
        self.exp_avg_sq = torch.zeros_like(weights)
        self.step_count = torch.zeros((), dtype=torch.float32, device=weights.device)
        self.one_pass = one_pass
        self.whole_update = CompiledOrEager(adamw_one_pass, one_pass and use_compile)
        self._rows = [
            ([weights[k]], [grad[k]], [self.exp_avg[k]], [self.exp_avg_sq[k]])
            for k in range(weights.shape[0])
        ]

    @torch.no_grad()
    def step(self, lr: torch.Tensor, clip_coef: torch.Tensor) -> None:
        """One update; ``lr[k]`` (a [K] float64 tensor) is run k's LR, 0 freezing it;
        ``clip_coef[k]`` its gradient factor."""
        self.step_count += 1
        if self.one_pass:
            tensors = (self.weights, self.grad, self.exp_avg, self.exp_avg_sq)
            rows = (lr.unsqueeze(1), clip_coef.unsqueeze(1), self.step_count)
            hyper = (*self.betas, self.eps, self.weight_decay)
            self.whole_update(*tensors, *rows, *hyper)
            return
        beta1, beta2 = self.betas
        # In float32 the clip rides in the kernel (as a gradient scale it divides by), so
        # clipped gradients are never written; the kernel takes only a float32 scale, so
        # float64 fleets scale their gradients first. ``found_inf`` 1 makes it skip a row.
        if self.grad.dtype == torch.float32:
            scales: list[torch.Tensor | None] = list((1.0 / clip_coef).unbind())
        else:
            self.grad.mul_(clip_coef.unsqueeze(1))
            scales = [None] * len(self._rows)
        frozen = (lr == 0).to(torch.float32).unbind()
        for k, (weights, grad, exp_avg, exp_avg_sq) in enumerate(self._rows):
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
                found_inf=frozen[k],
            )


def adamw_one_pass(
    weights: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    lr: torch.Tensor,
    clip_coef: torch.Tensor,
    step: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """AdamW on [K, P] tensors in place, run k with LR ``lr[k]`` and gradient factor
    ``clip_coef[k]`` ([K, 1] each); ``step`` is the 1-based count after this update (a 0-d
    tensor). Rows with LR 0 keep their weights and moments. Written as torch's AdamW is
    (decoupled decay, bias corrections in float64), in whole-tensor operations so that
    torch.compile fuses it into one pass."""
    dtype = weights.dtype
    live = lr != 0
    g = grad * clip_coef.to(dtype)
    m = torch.lerp(exp_avg, g, 1.0 - beta1)
    v = exp_avg_sq * beta2 + (1.0 - beta2) * g * g
    count = step.to(torch.float64)
    correction1 = 1.0 - beta1**count
    correction2_sqrt = (1.0 - beta2**count).sqrt()
    denom = v.sqrt() / correction2_sqrt.to(dtype) + eps
    decayed = weights * (1.0 - lr * weight_decay).to(dtype)
    updated = decayed - (lr / correction1).to(dtype) * m / denom
    weights.copy_(torch.where(live, updated, weights))
    exp_avg.copy_(torch.where(live, m, exp_avg))
    exp_avg_sq.copy_(torch.where(live, v, exp_avg_sq))


@torch.no_grad()
def clip_coefficients(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """clip_grad_norm_'s factor for each run of [K, P] gradients: min(1, max_norm / norm)."""
    norms = torch.linalg.vector_norm(grad, dim=1)
    return (max_norm / (norms + 1e-6)).clamp(max=1.0)
