"""Everything besides dataset, schedule and seed that determines a run's result."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    import torch

# Steps between the points of a run's held-out EMA loss curve unless a study says otherwise.
CURVE_EVERY = 250
# A training loss above this times the run's first loss counts as divergence (besides NaN/inf).
DIVERGE_FACTOR = 100.0


class _Section(BaseModel):
    # Strict: true is not 1 and 1e4 is not an int; an int is still a float.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataSettings(_Section):
    n: int = Field(100_000, ge=2, le=10_000_000, description="training points per dataset")
    dim: int | None = Field(
        None, ge=1, le=4096, description="dimension of the datasets that take any (mixture; 8)"
    )


class TrainSettings(_Section):
    steps: int = Field(10_000, gt=0, le=100_000_000, description="optimizer steps")
    batch_size: int = Field(256, gt=0, le=1_000_000)
    lr: float = Field(3e-4, gt=0, allow_inf_nan=False, description="base learning rate")
    weight_decay: float = Field(0.01, ge=0, allow_inf_nan=False, description="AdamW decay")
    clip: float = Field(0.5, gt=0, allow_inf_nan=False, description="gradient-norm clip")
    ema_beta: float = Field(0.995, ge=0, le=1, description="EMA decay ceiling")
    ema_every: int = Field(10, gt=0, description="steps between EMA updates")
    ema_warmup: int = Field(100, ge=0, description="steps during which the EMA copies weights")
    emb_size: int = Field(128, ge=4, le=4096, multiple_of=2)
    hidden_size: int = Field(256, gt=0, le=65_536)
    hidden_layers: int = Field(3, ge=0, le=256)
    timesteps: int = Field(100, ge=2, le=100_000, description="diffusion steps T")
    beta_schedule: Literal["linear", "quadratic"] = "linear"
    dtype: Literal["float32", "float64"] = "float32"
    precision: Literal["bf16-mixed"] | None = Field(
        None,
        description="bf16-mixed: bfloat16 matmuls, float32 weights, AdamW and EMA (unset: "
        "everything in dtype)",
    )
    diverge_factor: float | None = Field(
        None,
        gt=1,
        allow_inf_nan=False,
        description=f"a loss above this times the first step's is divergence ({DIVERGE_FACTOR:g})",
    )
    curve_every: int | None = Field(
        None, gt=0, description=f"steps between held-out EMA loss points ({CURVE_EVERY})"
    )

    @model_validator(mode="after")
    def _mixed_from_float32(self) -> TrainSettings:
        if self.precision is not None and self.dtype != "float32":
            raise ValueError(
                f"precision {self.precision} keeps float32 weights: dtype must be "
                f"float32, got {self.dtype}"
            )
        return self

    @field_validator("curve_every")
    @classmethod
    def _default_is_none(cls, value: int | None) -> int | None:
        """The default is stored as None, so runs from before curves keep their identity."""
        return None if value == CURVE_EVERY else value

    @property
    def curve_interval(self) -> int:
        return self.curve_every or CURVE_EVERY

    def diverged(self, loss: float, first: float) -> bool:
        """Whether a step's training loss means the run diverged: NaN/inf, or above
        ``diverge_factor`` (100) times the run's first loss."""
        bound = (self.diverge_factor or DIVERGE_FACTOR) * first
        return not (math.isfinite(loss) and loss <= bound)

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return torch.float64 if self.dtype == "float64" else torch.float32


class EvalSettings(_Section):
    samples: int = Field(
        10_000, gt=5, le=10_000_000, description="generated samples for KL and plots"
    )
    heldout: int = Field(
        10_000, gt=0, le=10_000_000, description="held-out points for the held-out loss"
    )
    reference_eval_loss: bool = Field(
        True, description="also compute the reference's eval loss (a pass over the train set)"
    )
    sample_chunk: int = Field(1000, gt=0, description="samples denoised at once")
    features: str | None = Field(
        None,
        description="module:function giving the image metrics' features of images [n, *shape] "
        "(default: a classifier trained on a labelled image set)",
    )


class TargetSettings(_Section):
    """Time-to-target: the held-out EMA loss a run must reach, per dataset."""

    factor: float = Field(
        1.01, ge=1, allow_inf_nan=False, description="the baseline's final loss times this"
    )
    loss: dict[str, float] = Field(
        default_factory=dict, description="a fixed target per dataset instead of the factor"
    )

    @field_validator("loss")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0 < v < float("inf")}
        if bad:
            raise ValueError(f"a target loss must be a positive number, got {bad}")
        return value


class PosthocSettings(_Section):
    """`[ema]`: post-hoc EMA. Each run tracks power-function EMAs of these relative stds and
    stores snapshots of them, from which `measure --ema-sweep` forms an EMA of any length."""

    posthoc: bool = Field(False, description="track EMAs and store snapshots for --ema-sweep")
    snapshots: int = Field(16, gt=0, le=1000, description="snapshots stored per tracked EMA")
    stds: list[float] = Field(
        default_factory=lambda: [0.05, 0.10],
        min_length=1,
        max_length=8,
        description="relative stds of the tracked EMAs (EDM2's sigma_rel)",
    )

    @field_validator("stds")
    @classmethod
    def _valid_stds(cls, value: list[float]) -> list[float]:
        from schedlab.averaging.profiles import gamma_of

        for std in value:
            gamma_of(std)
        if len(set(value)) != len(value):
            raise ValueError(f"stds must be distinct, got {value}")
        return value


# The MLP's sizes: accepted under [model] (where they belong) and under [train] (where study
# files before models were an axis put them, and where run ids keep reading them).
MLP_SIZES = ("emb_size", "hidden_size", "hidden_layers")


class ModelSettings(BaseModel):
    """`[model]`: ``name`` (mlp, unet, or module:factory) and the model's settings (the other
    keys, checked against the model's own when a study is validated)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    name: str = Field("mlp", min_length=1, description="mlp, unet, or module:factory")

    @property
    def options(self) -> dict[str, object]:
        return dict(self.model_extra or {})


class Settings(_Section):
    data: DataSettings = DataSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    eval: EvalSettings = EvalSettings()
    ema: PosthocSettings = PosthocSettings()
