"""schedlab: which learning-rate schedule to train a diffusion model with, and why.

The Python API (``schedlab.api``) is importable from here; it loads on first use, so that
``import schedlab`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["get_scheduler", "load_curves", "load_ema_sweep", "load_results", "run_study"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from schedlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'schedlab' has no attribute {name!r}")
