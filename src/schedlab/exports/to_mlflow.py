"""An MLflow tracking database (SQLite, MLflow's own recommended local backend): one MLflow
run per schedlab run, with its configuration as params, its metrics, and its curves as step
metrics. Needs ``pip install 'schedlab[mlflow]'``; browse with
``mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db``.

Exporting again adds only the runs not exported yet (tag ``schedlab.run_id`` and the run's
name); an MLflow run left unfinished by a killed export is deleted and written again.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from schedlab.config.errors import cause_line
from schedlab.exports.common import ExportedRun
from schedlab.exports.to_tensorboard import HELDOUT, LOSS, LR

RUN_TAG = "schedlab.run_id"
BATCH = 1000  # MLflow's limit of metrics per log_batch call


def tracking_uri(folder: Path) -> str:
    return f"sqlite:///{folder.resolve() / 'mlflow.db'}"


def client_for(folder: Path, what: str) -> Any:
    """An MLflow client of the tracking database in ``folder`` (made if missing, with its
    schema: a failure there, a full disk say, is one OSError naming the database)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as err:
        raise ValueError(f"{what} needs mlflow: pip install 'schedlab[mlflow]'") from err
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its schema migration lines
    logging.getLogger("alembic").setLevel(logging.WARNING)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        client = MlflowClient(tracking_uri=tracking_uri(folder))
        client.search_experiments(max_results=1)  # makes the database and its schema now
    except Exception as err:
        raise could_not_write(folder, err) from err
    return client


def could_not_write(folder: Path, err: Exception) -> OSError:
    """MLflow wraps SQLite's errors (a full disk) in its own: one naming the database."""
    database = str(folder / "mlflow.db")
    return OSError(errno.EIO, f"MLflow could not write: {cause_line(err)}", database)


def experiment_of(client: Any, folder: Path, experiment: str) -> str:
    """The id of the experiment named ``experiment``, made if missing."""
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    location = (folder.resolve() / "artifacts").as_uri()
    return str(client.create_experiment(experiment, artifact_location=location))


def write_runs(runs: Iterable[ExportedRun], folder: Path, experiment: str) -> int:
    """Log every run not exported yet into the experiment ``experiment``; the number logged."""
    client = client_for(folder, "MLflow export")
    try:
        return log_runs(client, runs, folder, experiment)
    except Exception as err:
        raise could_not_write(folder, err) from err


def log_runs(client: Any, runs: Iterable[ExportedRun], folder: Path, experiment: str) -> int:
    from mlflow.entities import Metric, Param

    experiment_id = experiment_of(client, folder, experiment)
    done = exported(client, experiment_id)
    count = 0
    for run in runs:
        run_id = str(run.row["run_id"])
        if (run_id, run.name) in done:  # one run under two labels is exported under each
            continue
        started, finished = (None if t is None else int(t * 1000) for t in run.times)
        created = client.create_run(  # MLflow's start and end: when the run trained
            experiment_id,
            run_name=run.name,
            tags={RUN_TAG: run_id, "phase": run.row["phase"]},
            start_time=started,
        )
        mlflow_id = created.info.run_id
        params = [Param(k, str(v)) for k, v in run.hparams.items()]
        for lo in range(0, len(params), 100):  # MLflow's limit of params per call
            client.log_batch(mlflow_id, params=params[lo : lo + 100])
        metrics = [Metric(k, v, 0, 0) for k, v in run.metrics.items()]
        metrics += curve_metrics(run, Metric)
        for lo in range(0, len(metrics), BATCH):
            client.log_batch(mlflow_id, metrics=metrics[lo : lo + BATCH])
        client.set_terminated(mlflow_id, end_time=finished)
        count += 1
    return count


def exported(client: Any, experiment_id: str) -> set[tuple[str, str]]:
    """(schedlab run id, name) of the runs already exported whole; unfinished MLflow runs are
    deleted."""
    done = set()
    for run in client.search_runs([experiment_id], max_results=50_000):
        if run.info.status == "FINISHED":
            done.add((run.data.tags.get(RUN_TAG), run.info.run_name))
        else:
            client.delete_run(run.info.run_id)
    return done


def curve_metrics(run: ExportedRun, metric: Any) -> list[Any]:
    out = []
    for step, (loss, lr) in enumerate(zip(run.loss, run.lr, strict=True), start=1):
        out.append(metric(LOSS, float(loss), 0, step))
        out.append(metric(LR, float(lr), 0, step))
    out += [metric(HELDOUT, float(loss), 0, int(step)) for step, loss in run.heldout]
    return out
