"""A study's curves written to TensorBoard while its runs train (`schedlab run --log`).

Each run gets the folder the TensorBoard export gives it (``<dataset>/<label>/seed-<k>``) and
the same scalar tags; the fleet tells each run's new steps every 50 steps, and each write is
flushed, so `tensorboard --logdir DIR` (or its reader) sees a study as it trains.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from schedlab.exports.to_tensorboard import LOSS, LR

if TYPE_CHECKING:
    from schedlab.plan import RunSpec

KINDS = ("tensorboard",)


def parse_log(value: str) -> tuple[str, Path]:
    """``tensorboard:DIR`` -> (kind, folder); a one-line ValueError naming the choices."""
    kind, sep, folder = value.partition(":")
    if not sep or kind not in KINDS or not folder:
        raise ValueError(f"--log takes KIND:DIR with KIND one of {', '.join(KINDS)}, got {value!r}")
    return kind, Path(folder)


class LiveTensorBoard:
    """Writes each run's training loss and LR as they are told (from the shards' threads)."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ValueError(
                "--log tensorboard needs tensorboard: install schedlab's [tensorboard] extra"
            ) from err
        self.folder, self.make = folder, SummaryWriter
        self.writers: dict[str, Any] = {}
        self.lock = threading.Lock()

    def __call__(self, run: RunSpec, first: int, losses: np.ndarray, lrs: np.ndarray) -> None:
        with self.lock:
            writer = self.writers.get(run.run_id)
            if writer is None:
                name = f"{run.dataset}/{run.label}/seed-{run.seed}"
                writer = self.writers[run.run_id] = self.make(log_dir=str(self.folder / name))
            for step, (loss, lr) in enumerate(zip(losses, lrs, strict=True), start=first + 1):
                writer.add_scalar(LOSS, float(loss), step)
                writer.add_scalar(LR, float(lr), step)
            writer.flush()

    def close(self) -> None:
        with self.lock:
            for writer in self.writers.values():
                writer.close()
