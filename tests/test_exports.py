"""TensorBoard and MLflow exports, read back with their own libraries."""

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from schedlab.cli import app
from schedlab.store.arrays import decode_array

runner = CliRunner()


def stored_curves(store):
    with sqlite3.connect(store) as conn:
        return {
            run_id: (decode_array(loss), decode_array(lr), decode_array(heldout))
            for run_id, loss, lr, heldout in conn.execute(
                "SELECT run_id, loss, lr, heldout FROM curves"
            )
        }


def export(study, store, fmt, out):
    return runner.invoke(
        app, ["export", str(study), "--store", str(store), "--format", fmt, "--out", str(out)]
    )


def test_tensorboard_export_reads_back_with_tensorboard(tiny_trained, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    study, store = tiny_trained
    result = export(study, store, "tensorboard", tmp_path / "tb")
    assert result.exit_code == 0, result.output
    assert "wrote 4 runs to" in result.stderr and result.stdout == ""
    curves = stored_curves(store)
    runs = sorted(p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*"))
    folders = sorted({p.relative_to(tmp_path / "tb").as_posix() for p in runs})
    assert folders == [f"moons/{s}/seed-{k}" for s in ("baseline", "step") for k in (0, 1)]
    seen = set()
    for folder in folders:
        events = EventAccumulator(str(tmp_path / "tb" / folder), size_guidance={"scalars": 0})
        events.Reload()
        content = events.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]
        ).session_start_info
        run_id = start.hparams["run_id"].string_value
        seen.add(run_id)
        assert start.hparams["dataset"].string_value == "moons"
        loss, lr, heldout = curves[run_id]
        tb_loss = events.Scalars("train/loss")
        assert [e.step for e in tb_loss] == [1, 2, 3, 4, 5]
        np.testing.assert_allclose([e.value for e in tb_loss], loss, rtol=1e-6)
        np.testing.assert_allclose([e.value for e in events.Scalars("train/lr")], lr, rtol=1e-6)
        held = events.Scalars("heldout/ema_loss")
        assert [e.step for e in held] == heldout[:, 0].astype(int).tolist()
        assert events.Scalars("hparams/kl_divergence")[0].value > 0
    assert seen == set(curves)
    # Again: the earlier export is replaced whole; a folder of other files is refused.
    assert export(study, store, "tensorboard", tmp_path / "tb").exit_code == 0
    assert len(list((tmp_path / "tb").rglob("events.out.tfevents.*"))) == len(runs)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused = export(study, store, "tensorboard", tmp_path / "mine")
    assert refused.exit_code == 2
    assert "holds files that are not a TensorBoard export" in refused.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_mlflow_export_reads_back_with_mlflow_and_adds_only_new_runs(tiny_trained, tmp_path):
    from mlflow.tracking import MlflowClient

    from schedlab.exports.to_mlflow import tracking_uri

    study, store = tiny_trained
    result = export(study, store, "mlflow", tmp_path / "ml")
    assert result.exit_code == 0, result.output
    assert "wrote 4 runs to" in result.stderr
    client = MlflowClient(tracking_uri=tracking_uri(tmp_path / "ml"))
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    curves = stored_curves(store)
    assert {r.data.tags["schedlab.run_id"] for r in runs} == set(curves)
    for run in runs:
        loss, lr, _ = curves[run.data.tags["schedlab.run_id"]]
        history = sorted(
            client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step
        )
        assert [m.step for m in history] == [1, 2, 3, 4, 5]
        np.testing.assert_allclose([m.value for m in history], loss, rtol=1e-6)
        lrs = sorted(client.get_metric_history(run.info.run_id, "train/lr"), key=lambda m: m.step)
        np.testing.assert_allclose([m.value for m in lrs], lr, rtol=1e-6)
        assert run.data.params["dataset"] == "moons" and "train.steps" in run.data.params
        assert run.data.metrics["kl_divergence"] > 0 and run.info.status == "FINISHED"
        # MLflow's start and end are when the run trained, not when it was exported (before:
        # the export's own time).
        with sqlite3.connect(store) as c:
            started, finished = c.execute(
                "SELECT started_at, finished_at FROM runs WHERE run_id = ?",
                (run.data.tags["schedlab.run_id"],),
            ).fetchone()
        assert (run.info.start_time, run.info.end_time) == (
            int(started * 1000),
            int(finished * 1000),
        )
    # An export killed half-way left a run unfinished: the next one replaces it, adds nothing else.
    client.set_terminated(runs[0].info.run_id, status="RUNNING")
    again = export(study, store, "mlflow", tmp_path / "ml")
    assert again.exit_code == 0 and "wrote 1 runs to" in again.stderr
    final = client.search_runs([experiment.experiment_id])
    assert len(final) == 4 and all(r.info.status == "FINISHED" for r in final)


@pytest.mark.parametrize("fmt", ["tensorboard", "mlflow"])
def test_log_exports_need_a_folder(tiny_trained, tmp_path, fmt):
    study, store = tiny_trained
    to_stdout = export(study, store, fmt, "-")
    assert to_stdout.exit_code == 2
    assert f"error: --out - writes CSV to stdout; {fmt} needs a file or folder" in to_stdout.stderr
    (tmp_path / "file").write_text("x")
    on_file = export(study, store, fmt, tmp_path / "file")
    assert on_file.exit_code == 2 and "is a file" in on_file.stderr
    assert (tmp_path / "file").read_text() == "x"


def test_one_run_under_two_labels_is_exported_under_each_once(tmp_path):
    from mlflow.tracking import MlflowClient

    from schedlab.api import run_study
    from schedlab.exports.to_mlflow import tracking_uri

    text = (Path(__file__).parent / "fixtures" / "tiny_study.toml").read_text()
    study = tmp_path / "alias.toml"
    study.write_text(text.replace('name = "step"', 'name = "cosine"\nlabel = "again"'))
    store = tmp_path / "alias.sqlite"
    assert run_study(study, store=store).outcomes["done"] == 2  # one configuration, 2 seeds
    first = export(study, store, "mlflow", tmp_path / "ml")
    again = export(study, store, "mlflow", tmp_path / "ml")
    assert "wrote 4 runs to" in first.stderr and "wrote 0 runs to" in again.stderr
    client = MlflowClient(tracking_uri=tracking_uri(tmp_path / "ml"))
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [
        f"moons/{label}/seed-{k}" for label in ("again", "baseline") for k in (0, 1)
    ]
