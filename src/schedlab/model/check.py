"""A model is tried before a study claims anything: built, and one forward pass checked."""

from __future__ import annotations

import os

import torch

from schedlab.model.registry import ModelSpec


def check_model(spec: ModelSpec, dataset: str, timesteps: int) -> None:
    """Build ``spec`` and predict the noise of two samples of ``dataset``: a factory or a
    forward that raises, an output of another shape, or a non-finite output is one ValueError
    naming the model and the dataset."""
    where = f"model {spec.name!r} on dataset {dataset!r}"
    check_size(spec, where)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = spec.build()
            x = torch.randn(2, *spec.shape)  # [2, *shape]
            t = torch.tensor([0, timesteps - 1])
            with torch.no_grad():
                out = model(x, t)
    except Exception as err:  # user code: its failure is one line naming it
        raise ValueError(f"{where} failed: {type(err).__name__}: {err}") from err
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{where} returned {got}, expected the noise of shape {list(x.shape)}")
    if not torch.isfinite(out).all():
        raise ValueError(f"{where} returned NaN or infinite values")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"{where} has no trainable parameters")


# What a run holds per parameter while it trains: weights, gradient, AdamW's two moments and
# the EMA, in float32 (more with post-hoc EMA; activations come on top).
BYTES_PER_PARAMETER = 5 * 4


def check_size(spec: ModelSpec, where: str) -> None:
    """Count the model's parameters without allocating them (on the meta device): one whose
    training state alone exceeds this machine's memory is refused by name."""
    try:
        count = parameter_count(spec)
    except Exception as err:  # user code: its failure is one line naming it
        raise ValueError(f"{where} failed: {type(err).__name__}: {err}") from err
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if count * BYTES_PER_PARAMETER > memory:
        raise ValueError(
            f"{where} has {count:,} parameters: one run needs about "
            f"{count * BYTES_PER_PARAMETER / 2**30:.1f} GiB to train, more than this machine's "
            f"{memory / 2**30:.1f} GiB"
        )


def parameter_count(spec: ModelSpec) -> int:
    """The model's parameters, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in spec.build().parameters())
