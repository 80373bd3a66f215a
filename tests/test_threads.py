"""The thread budget: OMP_NUM_THREADS, else the CPUs this process may use."""

import os

import pytest
import torch
from threadpoolctl import threadpool_info

from schedlab import threads


def test_default_honours_omp_num_threads_then_the_affinity(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    for ignored in ("0", "", "two"):
        monkeypatch.setenv("OMP_NUM_THREADS", ignored)
        assert threads.default_threads() == len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert threads.default_threads() == 1


def test_use_threads_sets_torch_blas_and_the_metrics_budget(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_budget", None)
    try:
        assert threads.use_threads(1) == 1
        assert torch.get_num_threads() == 1 and threads.budget() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        torch.set_num_threads(before)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=None)
    with pytest.raises(ValueError, match="--threads must be a positive int, got -2"):
        threads.use_threads(-2)
