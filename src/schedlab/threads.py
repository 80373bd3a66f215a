"""How many threads schedlab computes with: one budget for torch, BLAS and SciPy's k-d trees.

The default honours ``OMP_NUM_THREADS`` and otherwise the CPUs this process may run on
(``os.sched_getaffinity``: a SLURM or taskset allocation, not the whole machine), so that
training, sampling and the metrics never run more threads than the cores they were given.
"""

from __future__ import annotations

import os

_budget: int | None = None


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set to a positive int, else the CPUs this process may use."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def budget() -> int:
    """The threads to compute with: the last ``use_threads``, else the default."""
    return _budget or default_threads()


def use_threads(count: int | None = None) -> int:
    """Compute with ``count`` threads (default: ``default_threads()``) from now on: torch's
    intra-op pool, the BLAS libraries (threadpoolctl) and schedlab's own metrics."""
    global _budget
    if count is not None and (isinstance(count, bool) or count < 1):
        raise ValueError(f"--threads must be a positive int, got {count}")
    import torch
    from threadpoolctl import threadpool_limits

    _budget = count or default_threads()
    torch.set_num_threads(_budget)
    threadpool_limits(limits=_budget)
    return _budget
