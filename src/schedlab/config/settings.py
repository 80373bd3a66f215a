"""Everything besides dataset, schedule and seed that determines a run's result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSettings(_Section):
    n: int = Field(100_000, gt=0, description="training points per dataset")
    dim: int | None = Field(
        None, ge=1, le=4096, description="dimension of the datasets that take any (mixture; 8)"
    )


class TrainSettings(_Section):
    steps: int = Field(10_000, gt=0, description="optimizer steps")
    batch_size: int = Field(256, gt=0)
    lr: float = Field(3e-4, gt=0, allow_inf_nan=False, description="base learning rate")
    weight_decay: float = Field(0.01, ge=0, allow_inf_nan=False, description="AdamW decay")
    clip: float = Field(0.5, gt=0, allow_inf_nan=False, description="gradient-norm clip")
    ema_beta: float = Field(0.995, ge=0, le=1, description="EMA decay ceiling")
    ema_every: int = Field(10, gt=0, description="steps between EMA updates")
    ema_warmup: int = Field(100, ge=0, description="steps during which the EMA copies weights")
    emb_size: int = Field(128, ge=4, multiple_of=2)
    hidden_size: int = Field(256, gt=0)
    hidden_layers: int = Field(3, ge=0)
    timesteps: int = Field(100, ge=2, description="diffusion steps T")
    beta_schedule: Literal["linear", "quadratic"] = "linear"
    dtype: Literal["float32", "float64"] = "float32"

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return torch.float64 if self.dtype == "float64" else torch.float32


class EvalSettings(_Section):
    samples: int = Field(10_000, gt=5, description="generated samples for KL and plots")
    heldout: int = Field(10_000, gt=0, description="held-out points for the held-out loss")
    reference_eval_loss: bool = Field(
        True, description="also compute the reference's eval loss (a pass over the train set)"
    )
    sample_chunk: int = Field(1000, gt=0, description="samples denoised at once")


class Settings(_Section):
    data: DataSettings = DataSettings()
    train: TrainSettings = TrainSettings()
    eval: EvalSettings = EvalSettings()
