"""A study's curves written while its runs train (`schedlab run --log KIND:DIR`).

The fleet tells each run's new steps every 50 steps. ``tensorboard``: each run gets the folder
the TensorBoard export gives it (``<dataset>/<label>/seed-<k>``) and the same scalar tags, each
write flushed, so `tensorboard --logdir DIR` (or its reader) sees a study as it trains.
``mlflow``: one MLflow run per run in the experiment "<study> (live)" of ``DIR/mlflow.db``
(the export's experiment stays "<study>"), written by a thread of its own so that MLflow's
database never holds training up; its runs end when the study does. A study interrupted and run
again logs each resumed run into the MLflow run it began (steps between its last checkpoint
and the interrupt are logged twice, as in TensorBoard).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from schedlab.exports.to_tensorboard import LOSS, LR

if TYPE_CHECKING:
    from schedlab.plan import RunSpec

KINDS = ("tensorboard", "mlflow")


def parse_log(value: str) -> tuple[str, Path]:
    """``tensorboard:DIR`` -> (kind, folder); a one-line ValueError naming the choices."""
    kind, sep, folder = value.partition(":")
    if not sep or kind not in KINDS or not folder:
        raise ValueError(f"--log takes KIND:DIR with KIND one of {', '.join(KINDS)}, got {value!r}")
    return kind, Path(folder)


def live_log(value: str, study: str) -> LiveTensorBoard | LiveMLflow:
    """The writer ``--log value`` asks for, for the study named ``study``."""
    kind, folder = parse_log(value)
    return LiveTensorBoard(folder) if kind == "tensorboard" else LiveMLflow(folder, study)


def run_name(run: RunSpec) -> str:
    return f"{run.dataset}/{run.label}/seed-{run.seed}"


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
                folder = str(self.folder / run_name(run))
                writer = self.writers[run.run_id] = self.make(log_dir=folder)
            for step, (loss, lr) in enumerate(zip(losses, lrs, strict=True), start=first + 1):
                writer.add_scalar(LOSS, float(loss), step)
                writer.add_scalar(LR, float(lr), step)
            writer.flush()

    def close(self) -> None:
        with self.lock:
            for writer in self.writers.values():
                writer.close()


class LiveMLflow:
    """Logs each run's training loss and LR to MLflow as they are told (from the shards'
    threads), through a queue that one writer thread empties."""

    def __init__(self, folder: Path, study: str) -> None:
        from schedlab.exports.to_mlflow import RUN_TAG, client_for, could_not_write, experiment_of

        self.folder, self.client = folder, client_for(folder, "--log mlflow")
        try:
            self.experiment = experiment_of(self.client, folder, f"{study} (live)")
        except Exception as err:
            raise could_not_write(folder, err) from err
        self.runs: dict[str, str] = {}  # schedlab run id -> MLflow run id
        try:  # runs an interrupted study began: a resumed run goes on logging into its own
            for found in self.client.search_runs([self.experiment], max_results=50_000):
                run_id = found.data.tags.get(RUN_TAG)
                if run_id is not None:
                    self.runs.setdefault(run_id, found.info.run_id)
        except Exception as err:
            raise could_not_write(folder, err) from err
        self.told: queue.Queue[tuple[RunSpec, int, np.ndarray, np.ndarray] | None] = queue.Queue()
        self.opened: set[str] = set()  # MLflow runs this study logged into
        self.failed: Exception | None = None
        self.writer = threading.Thread(target=self.write, name="schedlab-mlflow", daemon=True)
        self.writer.start()

    def __call__(self, run: RunSpec, first: int, losses: np.ndarray, lrs: np.ndarray) -> None:
        self.told.put((run, first, losses, lrs))

    def write(self) -> None:
        from mlflow.entities import Metric

        from schedlab.exports.to_mlflow import BATCH, RUN_TAG

        while (item := self.told.get()) is not None:
            if self.failed is not None:
                continue  # the first failure is reported at close; the study goes on
            run, first, losses, lrs = item
            try:
                mlflow_id = self.runs.get(run.run_id)
                if mlflow_id is None:
                    created = self.client.create_run(
                        self.experiment, run_name=run_name(run), tags={RUN_TAG: run.run_id}
                    )
                    mlflow_id = self.runs[run.run_id] = created.info.run_id
                elif mlflow_id not in self.opened:
                    self.client.update_run(mlflow_id, status="RUNNING")
                self.opened.add(mlflow_id)
                now = int(time.time() * 1000)
                metrics = []
                for step, (loss, lr) in enumerate(zip(losses, lrs, strict=True), start=first + 1):
                    metrics.append(Metric(LOSS, float(loss), now, step))
                    metrics.append(Metric(LR, float(lr), now, step))
                for lo in range(0, len(metrics), BATCH):
                    self.client.log_batch(mlflow_id, metrics=metrics[lo : lo + BATCH])
            except Exception as err:  # kept, and raised at close
                self.failed = err

    def close(self) -> None:
        """Write what is queued, end the MLflow runs; a failure on the way is raised here."""
        from schedlab.exports.to_mlflow import could_not_write

        self.told.put(None)
        self.writer.join()
        try:
            if self.failed is not None:
                raise self.failed
            for mlflow_id in self.opened:
                self.client.set_terminated(mlflow_id)
        except Exception as err:
            raise could_not_write(self.folder, err) from err
