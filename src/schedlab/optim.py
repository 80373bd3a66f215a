"""The optimizer a schedule trains with, and the weights evaluation must read."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch.optim import Optimizer

from schedlab.schedules import ScheduleSpec


def build_optimizer(
    parameters: Iterable[torch.Tensor], spec: ScheduleSpec, lr: float, weight_decay: float
) -> Optimizer:
    """AdamW with torch defaults, or AdamWScheduleFree for ``schedule_free``.

    Schedule-free's own warm-up is left at 0: the generic ``warmup_steps`` ramp drives the LR it
    reads from its param group, so warm-ups are the same LinearLR for every schedule.
    """
    if spec.definition.optimizer == "schedule_free":
        from schedulefree import AdamWScheduleFree

        optimizer = AdamWScheduleFree(
            parameters,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=0,
            r=spec.params["r"],
            weight_lr_power=spec.params["weight_lr_power"],
        )
        optimizer.train()
        return optimizer
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


def is_schedule_free(optimizer: Optimizer) -> bool:
    return hasattr(optimizer, "train") and hasattr(optimizer, "eval")


@contextmanager
def evaluation_weights(optimizer: Optimizer) -> Iterator[None]:
    """Inside, the model holds the weights to evaluate (schedule-free's averaged x sequence)."""
    if not is_schedule_free(optimizer):
        yield
        return
    optimizer.eval()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        optimizer.train()  # type: ignore[attr-defined]


def finish_training(optimizer: Optimizer) -> None:
    """Leave the model holding its evaluation weights for good."""
    if is_schedule_free(optimizer):
        optimizer.eval()  # type: ignore[attr-defined]


class FleetAdamW:
    """AdamW for stacked [K, ...] weights with a learning rate per run.

    Each run is updated by torch's own fused AdamW kernel (one pass over weights, gradients
    and moments instead of a dozen) on its slices of the stacked tensors, with its own LR.
    The kernel is torch.optim.AdamW(fused=True)'s, with bias corrections in float64.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.step_count = torch.zeros((), dtype=torch.float32, device=self.params[0].device)
        k_runs = self.params[0].shape[0]
        self._slices = [
            (
                [p[k] for p in self.params],
                [m[k] for m in self.exp_avg],
                [v[k] for v in self.exp_avg_sq],
            )
            for k in range(k_runs)
        ]

    @torch.no_grad()
    def step(self, lr: list[float]) -> None:
        """One update; ``lr[k]`` is run k's learning rate, and 0 freezes the run."""
        self.step_count += 1
        beta1, beta2 = self.betas
        for k, (params, exp_avg, exp_avg_sq) in enumerate(self._slices):
            if lr[k] == 0:
                continue
            grads = [p.grad[k] for p in self.params]  # type: ignore[index]
            torch._fused_adamw_(
                params,
                grads,
                exp_avg,
                exp_avg_sq,
                [],
                [self.step_count] * len(params),
                lr=lr[k],
                beta1=beta1,
                beta2=beta2,
                weight_decay=self.weight_decay,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )


@torch.no_grad()
def clip_grad_norm_per_run(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ for each run of stacked [K, ...] gradients; returns the K norms.

    Only the runs whose norm exceeds ``max_norm`` are scaled (by the same coefficient torch
    computes), so the others' gradients are not even touched.
    """
    norms = torch.stack([torch.linalg.vector_norm(p.grad.flatten(1), dim=1) for p in params])
    total = torch.linalg.vector_norm(norms, dim=0)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for k in torch.nonzero(coef < 1).flatten().tolist():
        torch._foreach_mul_([p.grad[k] for p in params], coef[k])  # type: ignore[index]
    return total
