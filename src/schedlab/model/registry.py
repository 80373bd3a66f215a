"""Models by name: the built-ins ``mlp`` and ``unet``, or ``module:factory`` (no torch).

A model is a factory called as ``factory(shape, **settings)`` with one sample's shape (a tuple)
that returns an ``nn.Module`` whose ``forward(x_t [B, *shape], t [B] int64)`` predicts the noise
``[B, *shape]``. Each entry declares the data it takes: ``vectors`` (samples flattened to
``[d]``: the MLP sees digits as 64 numbers), ``images`` (``[C, H, W]``), or ``any`` (the
dataset's own shape: a user model). Validating a study reads this registry without importing
torch; ``ModelSpec.build`` imports the factory.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from schedlab import usercode
from schedlab.params import Param, check_params

Input = Literal["vectors", "images", "any"]
DEFAULT = "mlp"


@dataclass(frozen=True)
class ModelDef:
    name: str
    description: str
    params: dict[str, Param]
    input: Input
    factory: str  # "module:attribute" of factory(shape, **settings)
    source_hash: str | None = None  # a user model's module source
    open_params: bool = False  # a user factory: whatever keyword arguments it takes

    def sample_shape(self, shape: tuple[int, ...], dataset: str) -> tuple[int, ...]:
        """The shape one sample of ``dataset`` (natural ``shape``) has for this model."""
        if self.input == "vectors":
            return (math.prod(shape),)
        if self.input == "images" and len(shape) != 3:
            raise ValueError(
                f"model {self.name!r} needs images [C, H, W]; dataset {dataset!r} has samples "
                f"of shape {list(shape)}"
            )
        return shape


MLP_PARAMS = {
    "emb_size": Param("int", 128, "sinusoidal embedding size per coordinate", low=4),
    "hidden_size": Param("int", 256, "width of the residual MLP", low=1, high=65_536),
    "hidden_layers": Param("int", 3, "residual blocks", low=0, high=256),
}

MODELS: dict[str, ModelDef] = {
    "mlp": ModelDef(
        "mlp",
        "the reference: sinusoidal embeddings of each coordinate and t, a residual MLP",
        MLP_PARAMS,
        "vectors",
        "schedlab.model.denoiser:mlp",
    ),
    "unet": ModelDef(
        "unet",
        "a small conv UNet for images [C, H, W] (GroupNorm, SiLU, timestep embedding)",
        {
            "channels": Param("int", 16, "width of the first level (a multiple of 8)", low=8),
            "levels": Param("int", 2, "resolutions (H and W divisible by 2^(levels-1))", low=1),
            "emb_size": Param("int", 64, "timestep embedding size (even)", low=4, high=4096),
        },
        "images",
        "schedlab.model.unet:UNet",
    ),
}


def names() -> list[str]:
    return sorted(MODELS)


def lookup(name: str) -> ModelDef:
    """The registry entry for ``name``, or a user model given as ``module:factory``."""
    return usercode.lookup(name, MODELS, "model", user_defined, "module:factory")


@functools.cache  # one import and one source hash per process
def user_defined(reference: str) -> ModelDef:
    """A model from ``module:factory``; its keyword arguments with defaults are its settings."""
    factory, module = usercode.load(reference, "model")
    params: dict[str, Param] = {}
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    for name, p in (signature.parameters if signature else {}).items():
        if p.default is inspect.Parameter.empty or p.kind is not p.POSITIONAL_OR_KEYWORD:
            continue
        kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(p.default))
        if kind is not None:
            params[name] = Param(kind, p.default, "")
    description = usercode.first_line(factory, "user-defined model")
    return ModelDef(
        reference,
        description,
        params,
        "any",
        reference,
        source_hash=usercode.source_hash(module),
        open_params=True,
    )


@dataclass(frozen=True)
class ModelSpec:
    """A model with its settings resolved and the sample shape it is built for."""

    name: str
    shape: tuple[int, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def definition(self) -> ModelDef:
        return lookup(self.name)

    def identity(self) -> dict[str, Any]:
        """What a run id holds of its model (absent for the default MLP: its sizes are in
        ``[train]``, so runs stored before models were an axis keep their ids)."""
        source = self.definition.source_hash
        return {
            "name": self.name,
            "shape": list(self.shape),
            "settings": self.settings,
            **({"source": source} if source is not None else {}),
        }

    def build(self) -> Any:
        """A fresh ``nn.Module`` (initialised from torch's global RNG: seed it first)."""
        module_name, _, attr = self.definition.factory.partition(":")
        factory: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
        return factory(self.shape, **self.settings)


def resolve(
    name: str, settings: Mapping[str, Any], shape: tuple[int, ...], dataset: str
) -> ModelSpec:
    """``name`` with ``settings`` checked (defaults filled in) for samples of ``dataset``,
    whose natural shape is ``shape``."""
    definition = lookup(name)
    owner = f"model {name}"
    if definition.open_params:
        known = check_params(owner, definition.params, {})
        resolved = {**known, **{k: _plain(owner, k, v) for k, v in settings.items()}}
        for key, param in definition.params.items():
            if key in settings:
                resolved[key] = param.check(owner, key, settings[key])
    else:
        resolved = check_params(owner, definition.params, settings)
    return ModelSpec(name, definition.sample_shape(tuple(shape), dataset), resolved)


def _plain(owner: str, key: str, value: Any) -> Any:
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"{owner}: {key} must be a number, a string or a bool, got {value!r}")
    return value
