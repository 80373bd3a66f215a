"""Time-to-target: held-out curves recorded by both engines, and the steps and seconds read off."""

import math

import numpy as np
import pytest
import torch

from schedlab import data
from schedlab.config.settings import TargetSettings, TrainSettings
from schedlab.config.study import parse_study
from schedlab.measure.losses import HeldoutLoss
from schedlab.measure.targets import TargetContext, dataset_targets, first_reached
from schedlab.plan import expand
from schedlab.schedules.registry import resolve
from schedlab.store.records import RunRecord
from schedlab.training.common import Member, noise_schedule
from schedlab.training.fleet.shards import train_fleet
from schedlab.training.loop import train_reference

CURVE = np.array([[250, 0.9], [500, 0.6], [750, 0.45], [1000, 0.40], [1250, 0.41]])


def test_the_first_step_at_or_below_the_target_is_read_off_the_curve():
    assert first_reached(CURVE, 0.5) == 750
    assert first_reached(CURVE, 0.45) == 750  # reaching it exactly counts
    assert first_reached(CURVE, 0.41) == 1000  # later points do not move it
    assert first_reached(CURVE, 0.95) == 250
    assert math.isnan(first_reached(CURVE, 0.39))  # never reached
    assert math.isnan(first_reached(None, 0.5))  # no curve recorded
    assert math.isnan(first_reached(CURVE, math.nan))  # no target


def test_seconds_to_target_use_the_runs_own_step_rate():
    context = TargetContext(CURVE, 0.5, training_time=25.0, steps_trained=1250)
    assert context.steps_to_target() == 750
    assert context.seconds_to_target() == pytest.approx(750 * 25.0 / 1250)
    assert math.isnan(TargetContext(CURVE, 0.1, 25.0, 1250).seconds_to_target())


def record(label, dataset, final, status="done"):
    return RunRecord(
        run_id=f"{label}-{dataset}-{final}",
        label=label,
        dataset=dataset,
        schedule=label,
        params={},
        seed=0,
        settings={"train": {"steps": 1000}},
        engine="fleet",
        status=status,
        error=None,
        diverged_at=None,
        attempts=1,
        training_time=10.0,
        host=None,
        versions={},
        origin=None,
        metrics={"eval_loss_heldout_ema": final},
    )


def test_a_datasets_target_is_the_baselines_mean_final_loss_times_the_factor():
    records = [
        record("baseline", "moons", 0.40),
        record("baseline", "moons", 0.44),
        record("baseline", "moons", 9.0, status="failed"),  # not finished: not counted
        record("step", "moons", 0.30),  # not the baseline
        record("step", "line", 0.2),  # no baseline run on line
        record("baseline", "dino", 0.5),
    ]
    targets = dataset_targets(records, "baseline", TargetSettings())
    assert targets["moons"] == pytest.approx(0.42 * 1.01)
    assert math.isnan(targets["line"])
    fixed = dataset_targets(records, "baseline", TargetSettings(factor=1.1, loss={"dino": 0.7}))
    assert fixed["dino"] == 0.7 and fixed["moons"] == pytest.approx(0.42 * 1.1)


SMALL = dict(batch_size=50, emb_size=8, hidden_size=16, hidden_layers=1, dtype="float64")


def heldout(settings):
    points = data.load_heldout("moons", 300, 2)
    return HeldoutLoss(points, noise_schedule(settings), torch.float64)


def test_both_engines_record_the_same_heldout_curve_without_changing_training():
    settings = TrainSettings(steps=25, curve_every=10, **SMALL)
    points = data.load("moons", 400)
    loss = heldout(settings)
    member = Member(points, resolve("cosine"), 3, 3e-4)
    loop = train_reference(points, member.schedule, settings, 3, loss)
    (fleet,) = train_fleet([member], settings, heldout_loss=lambda k, model: loss(model))
    assert loop.heldout_curve[:, 0].tolist() == [10, 20, 25]  # every 10 steps and the end
    np.testing.assert_allclose(fleet.heldout_curve, loop.heldout_curve, rtol=1e-10)
    # The last point is the final EMA weights' held-out loss.
    assert loop.heldout_curve[-1, 1] == pytest.approx(loss(loop.ema_model), rel=1e-12)
    # Measuring the curve draws nothing and changes no weight: the same run without it.
    unmeasured = train_reference(points, member.schedule, settings, 3)
    assert np.array_equal(unmeasured.losses, loop.losses)
    assert unmeasured.heldout_curve.shape == (0, 2)
    assert all(
        torch.equal(a, b)
        for a, b in zip(unmeasured.ema_model.parameters(), loop.ema_model.parameters(), strict=True)
    )


def test_the_default_curve_interval_keeps_run_ids_and_another_changes_them():
    text = 'name = "c"\ndatasets = ["moons"]\n[[schedules]]\nname = "cosine"\n'
    plain = expand(parse_study(text, "a.toml"))[0]
    same = expand(parse_study(text + "[train]\ncurve_every = 250\n", "b.toml"))[0]
    finer = expand(parse_study(text + "[train]\ncurve_every = 100\n", "c.toml"))[0]
    assert plain.run_id == same.run_id != finer.run_id
    assert finer.settings.train.curve_interval == 100 and plain.settings.train.curve_interval == 250


def test_target_settings_are_checked():
    text = 'name = "c"\ndatasets = ["moons"]\n[[schedules]]\nname = "cosine"\n'
    with pytest.raises(ValueError, match=r"target\.loss names dino, not a dataset of this study"):
        parse_study(text + "[target.loss]\ndino = 0.4\n", "s.toml")
    with pytest.raises(ValueError, match="a target loss must be a positive number"):
        parse_study(text + "[target.loss]\nmoons = -1.0\n", "s.toml")
    with pytest.raises(ValueError, match="factor"):
        parse_study(text + "[target]\nfactor = 0.5\n", "s.toml")
