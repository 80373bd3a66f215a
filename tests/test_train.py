import numpy as np
import torch

from schedlab import data
from schedlab.config.settings import TrainSettings
from schedlab.schedules import registry as schedules
from schedlab.schedules.curves import lr_curve
from schedlab.training.common import build_model
from schedlab.training.loop import train_reference

SMALL = TrainSettings(steps=40, batch_size=64, emb_size=16, hidden_size=32, hidden_layers=2)


def small_points():
    return data.load("moons", 500)


def test_same_seed_same_numbers():
    spec = schedules.resolve("cosine")
    a = train_reference(small_points(), spec, SMALL, seed=3)
    b = train_reference(small_points(), spec, SMALL, seed=3)
    np.testing.assert_array_equal(a.losses, b.losses)
    for pa, pb in zip(a.ema_model.parameters(), b.ema_model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_seeds_differ_and_schedules_share_initial_weights():
    w0 = [p.clone() for p in build_model(SMALL, 0).parameters()]
    w1 = [p.clone() for p in build_model(SMALL, 1).parameters()]
    assert not torch.equal(w0[0], w1[0])
    const = train_reference(small_points(), schedules.resolve("constant"), SMALL, seed=0)
    cos = train_reference(small_points(), schedules.resolve("cosine"), SMALL, seed=0)
    # Step 0 sees the same weights, data and noise under both schedules: same loss.
    assert const.losses[0] == cos.losses[0]
    assert const.losses[-1] != cos.losses[-1]


def test_records_the_lr_the_optimizer_used():
    spec = schedules.resolve("step", {"step_size": 10, "gamma": 0.5})
    result = train_reference(small_points(), spec, SMALL, seed=0)
    expected = lr_curve("step", SMALL.steps, SMALL.lr, step_size=10, gamma=0.5)
    np.testing.assert_allclose(result.lrs, expected, rtol=1e-15)
    assert result.losses.shape == (40,)
    assert result.training_time > 0


def test_diverging_run_is_recorded_not_raised():
    settings = SMALL.model_copy(update={"lr": 1e30, "clip": 1e30})
    result = train_reference(small_points(), schedules.resolve("constant"), settings, seed=0)
    assert result.diverged_at is not None
    assert len(result.losses) == result.diverged_at + 1
    last = result.losses[-1]
    assert not np.isfinite(last) or last > 100 * result.losses[0]


def test_a_loss_that_explodes_without_turning_nan_is_divergence_too():
    """lr = 100 (clipped updates): the loss grows past 100x its first value, never NaN."""
    settings = SMALL.model_copy(update={"lr": 100.0})
    result = train_reference(small_points(), schedules.resolve("constant"), settings, seed=0)
    assert result.diverged_at is not None and np.all(np.isfinite(result.losses))
    assert result.losses[-1] > 100 * result.losses[0] >= result.losses[:-1].max()
    lenient = settings.model_copy(update={"diverge_factor": 1e30})
    kept = train_reference(small_points(), schedules.resolve("constant"), lenient, seed=0)
    assert kept.diverged_at is None  # the bound is the study's to set
    assert kept.losses.max() > 100 * kept.losses[0]


def test_schedule_free_evaluates_its_averaged_weights():
    from schedlab.training.optim import build_optimizer, evaluation_weights

    spec = schedules.resolve("schedule_free")
    model = build_model(SMALL, 0)
    optimizer = build_optimizer(model.parameters(), spec, 1e-2, 0.0)
    x = torch.as_tensor(small_points()[:64])
    t = torch.randint(0, 100, (64,))
    for _ in range(5):
        optimizer.zero_grad()
        ((model(x, t) - x) ** 2).mean().backward()
        optimizer.step()
    train_weights = model.input.weight.detach().clone()
    with evaluation_weights(optimizer):
        eval_weights = model.input.weight.detach().clone()
    assert not torch.equal(train_weights, eval_weights)
    torch.testing.assert_close(model.input.weight.detach(), train_weights)
    result = train_reference(small_points(), spec, SMALL, seed=0)
    assert result.diverged_at is None and np.all(np.isfinite(result.losses))
