"""A fleet computation through torch.compile when asked, with an eager fallback."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch


class CompiledOrEager:
    """Calls ``eager`` through torch.compile when ``use_compile``, else as it is.

    If compiling or running the compiled function raises (some Inductor versions fail on such
    graphs), the call is redone eagerly and every later call runs eagerly; ``failure`` says why.
    """

    def __init__(self, eager: Callable[..., Any], use_compile: bool) -> None:
        self.eager = eager
        self.compiled = torch.compile(eager) if use_compile else None
        self.failure: str | None = None

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as err:  # any compiler failure: fall back, say so once
                self.failure = f"{type(err).__name__}: {err}".splitlines()[0]
                warnings.warn(
                    f"torch.compile failed, the fleet trains eagerly: {self.failure}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.compiled = None
        return self.eager(*args)
