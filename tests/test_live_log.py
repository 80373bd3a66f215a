"""`schedlab run --log tensorboard:DIR`: each run's curves readable while the study trains."""

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from schedlab.store.store import Store

TINY = Path(__file__).parent / "fixtures" / "tiny_study.toml"


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """run folder -> its train/loss (step, value) pairs, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in folder.rglob("events.out.tfevents.*"):
        reader = EventAccumulator(str(events.parent))
        reader.Reload()
        if "train/loss" in reader.Tags()["scalars"]:
            out[str(events.parent.relative_to(folder))] = [
                (e.step, e.value) for e in reader.Scalars("train/loss")
            ]
    return out


def mlflow_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """MLflow run name -> its train/loss (step, value) pairs, read by MLflow's own client
    from the experiment "<study> (live)"."""
    from mlflow.tracking import MlflowClient

    if not (folder / "mlflow.db").exists():
        return {}
    try:  # the writer has made its schema and experiment (a reader must not race its migration)
        with sqlite3.connect(folder / "mlflow.db", timeout=30) as c:
            made = c.execute(
                "SELECT count(*) FROM experiments WHERE name = ?", ("tiny (live)",)
            ).fetchone()[0]
    except sqlite3.OperationalError:  # no table yet
        return {}
    if not made:
        return {}
    client = MlflowClient(tracking_uri=f"sqlite:///{folder.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny (live)")
    if experiment is None:
        return {}
    out = {}
    for run in client.search_runs([experiment.experiment_id]):
        history = client.get_metric_history(run.info.run_id, "train/loss")
        out[run.info.run_name] = sorted((m.step, m.value) for m in history)
    return out


READERS = {"tensorboard": scalars, "mlflow": mlflow_scalars}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(READERS))
def test_curves_are_readable_mid_study_and_equal_the_stored_ones_at_the_end(tmp_path, kind):
    study = tmp_path / "live.toml"
    study.write_text(TINY.read_text().replace("steps = 5", "steps = 1500"))
    logs, store = tmp_path / kind, tmp_path / "s.sqlite"
    command = [*(sys.executable, "-m", "schedlab", "run", str(study)), "--store", str(store)]
    process = subprocess.Popen(
        [*command, "--log", f"{kind}:{logs}"], stderr=subprocess.PIPE, text=True
    )
    read = READERS[kind]
    seen_mid_study = {}
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            seen_mid_study = read(logs)
            if len(seen_mid_study) == 4 and all(len(v) >= 50 for v in seen_mid_study.values()):
                break
            time.sleep(0.5)
        assert process.poll() is None, "the study ended before its curves could be read"
        assert len(seen_mid_study) == 4
        assert all(50 <= len(v) < 1500 for v in seen_mid_study.values())
    finally:
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    final = read(logs)
    assert sorted(final) == sorted(seen_mid_study)  # moons/baseline/seed-0, ...
    with Store(store, create=False, read_only=True) as db:
        runs = db.conn.execute("SELECT run_id, schedule, seed FROM runs").fetchall()
        for run_id, schedule, seed in runs:
            label = "baseline" if schedule == "cosine" else schedule
            logged = final[f"moons/{label}/seed-{seed}"]
            loss, _ = db.curves(run_id)
            assert [s for s, _ in logged] == list(range(1, 1501))
            np.testing.assert_allclose([v for _, v in logged], loss, rtol=1e-6)  # float32 there


def test_run_study_hands_its_progress_lines_to_a_callable(tmp_path):
    import schedlab

    lines: list[str] = []
    outcome = schedlab.run_study(TINY, store=tmp_path / "s.sqlite", progress=lines.append)
    assert outcome.outcomes == {"done": 4}
    assert lines[0] == "fleet of 4 runs: started (0 of 4 runs done)"
    assert sorted(lines[1:]) == sorted(
        f"moons/{label}/seed {seed}: done" for label in ("baseline", "step") for seed in (0, 1)
    )


def test_a_resumed_study_logs_into_the_mlflow_runs_it_began(tmp_path):
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    from schedlab.exports.live import LiveMLflow

    run = SimpleNamespace(run_id="r1", dataset="moons", label="cosine", seed=0)
    losses = np.linspace(1.0, 0.5, 100)
    for first, last in ((0, 60), (50, 100)):  # killed after step 60, resumed from step 50
        live = LiveMLflow(tmp_path, "tiny")
        live(run, first, losses[first:last], np.full(last - first, 1e-3))
        live.close()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny (live)")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "moons/cosine/seed-0"
    steps = sorted(m.step for m in client.get_metric_history(found.info.run_id, "train/loss"))
    assert sorted(set(steps)) == list(range(1, 101))  # 51-60 logged twice
