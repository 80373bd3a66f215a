"""TensorBoard event files: one folder per run, its curves as scalars and its configuration
and metrics in the HParams dashboard. Written with torch's SummaryWriter (needs the
``tensorboard`` package: ``pip install 'schedlab[tensorboard]'``)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from schedlab.exports.common import ExportedRun

# The scalar tags of a run's curves.
LOSS, LR, HELDOUT = "train/loss", "train/lr", "heldout/ema_loss"


def write_runs(runs: Iterable[ExportedRun], folder: Path) -> int:
    """Write every run under ``folder``/<its name>; the number of runs written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ValueError(
            "TensorBoard export needs tensorboard: pip install 'schedlab[tensorboard]'"
        ) from err
    count = 0
    for run in runs:
        with writer_errors() as failed, SummaryWriter(log_dir=str(folder / run.name)) as writer:
            for step, (loss, lr) in enumerate(zip(run.loss, run.lr, strict=True), start=1):
                writer.add_scalar(LOSS, float(loss), step)
                writer.add_scalar(LR, float(lr), step)
            for step, loss in run.heldout:
                writer.add_scalar(HELDOUT, float(loss), int(step))
            # run_name "." keeps the hparams beside the curves, in the run's own folder.
            writer.add_hparams(
                run.hparams, {f"hparams/{k}": v for k, v in run.metrics.items()}, run_name="."
            )
        if failed:
            raise failed[0]
        count += 1
    return count


@contextmanager
def writer_errors() -> Iterator[list[BaseException]]:
    """The errors of the writer's background thread (a full disk), kept to be raised here
    rather than printed by the thread as a traceback."""
    failed: list[BaseException] = []
    before = threading.excepthook

    def keep(args: threading.ExceptHookArgs) -> None:
        failed.append(args.exc_value or RuntimeError("TensorBoard's writer thread failed"))

    threading.excepthook = keep
    try:
        yield failed
    finally:
        threading.excepthook = before
