"""Schedules: lr_curve equals torch's own scheduler step by step; properties; validation."""

import math
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler as S

from schedlab.params import Param
from schedlab.schedules import registry as schedules
from schedlab.schedules.curves import lr_curve

BASE = 3e-4


def torch_curve(make, steps, metrics=None):
    """Step a torch scheduler built by ``make(optimizer)`` and record the LR of every step."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=BASE)
    scheduler = make(opt)
    out = []
    for i in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if metrics is None:
            scheduler.step()
        else:
            scheduler.step(metrics[i])
    return np.array(out)


def warm(opt, w, start, main):
    return S.SequentialLR(opt, [S.LinearLR(opt, start, 1.0, total_iters=w), main], milestones=[w])


CASES = [
    ("step", {"step_size": 7, "gamma": 0.5}, lambda o: S.StepLR(o, 7, 0.5)),
    ("step", {"step_size": 30, "gamma": 0.1}, lambda o: S.StepLR(o, 30, 0.1)),
    (
        "multistep",
        {"milestones": [10, 50, 51], "gamma": 0.3},
        lambda o: S.MultiStepLR(o, [10, 50, 51], 0.3),
    ),
    ("exponential", {"gamma": 0.97}, lambda o: S.ExponentialLR(o, 0.97)),
    ("cosine", {}, lambda o: S.CosineAnnealingLR(o, 120)),
    ("cosine", {"eta_min": 1e-5}, lambda o: S.CosineAnnealingLR(o, 120, 1e-5)),
    (
        "cosine_restarts",
        {"t_0": 13, "t_mult": 2, "eta_min": 1e-6},
        lambda o: S.CosineAnnealingWarmRestarts(o, 13, 2, 1e-6),
    ),
    ("linear", {"end_factor": 0.1}, lambda o: S.LinearLR(o, 1.0, 0.1, total_iters=120)),
    ("polynomial", {"power": 2.0}, lambda o: S.PolynomialLR(o, total_iters=120, power=2.0)),
    ("onecycle", {}, lambda o: S.OneCycleLR(o, BASE, total_steps=120, cycle_momentum=False)),
    (
        "onecycle",
        {"pct_start": 0.1, "anneal_strategy": "linear", "three_phase": True},
        lambda o: S.OneCycleLR(
            o,
            BASE,
            total_steps=120,
            pct_start=0.1,
            anneal_strategy="linear",
            three_phase=True,
            cycle_momentum=False,
        ),
    ),
    (
        "cyclic",
        {"step_size_up": 9},
        lambda o: S.CyclicLR(o, BASE * 0.1, BASE, 9, cycle_momentum=False),
    ),
    (
        "cyclic",
        {"step_size_up": 5, "step_size_down": 11, "mode": "triangular2"},
        lambda o: S.CyclicLR(o, BASE * 0.1, BASE, 5, 11, mode="triangular2", cycle_momentum=False),
    ),
    (
        "cyclic",
        {"mode": "exp_range", "gamma": 0.99, "step_size_up": 4, "min_factor": 0.5},
        lambda o: S.CyclicLR(
            o, BASE * 0.5, BASE, 4, mode="exp_range", gamma=0.99, cycle_momentum=False
        ),
    ),
    # Warm-up compositions: the schedule runs over the steps after the ramp.
    ("cosine", {"warmup_steps": 20}, lambda o: warm(o, 20, 0.01, S.CosineAnnealingLR(o, 100))),
    (
        "step",
        {"warmup_steps": 15, "warmup_start_factor": 0.2, "step_size": 10, "gamma": 0.5},
        lambda o: warm(o, 15, 0.2, S.StepLR(o, 10, 0.5)),
    ),
    (
        "exponential",
        {"warmup_steps": 5, "gamma": 0.95},
        lambda o: warm(o, 5, 0.01, S.ExponentialLR(o, 0.95)),
    ),
    (
        "polynomial",
        {"warmup_steps": 30, "power": 0.5},
        lambda o: warm(o, 30, 0.01, S.PolynomialLR(o, total_iters=90, power=0.5)),
    ),
    (
        "cosine_restarts",
        {"warmup_steps": 10, "t_0": 25},
        lambda o: warm(o, 10, 0.01, S.CosineAnnealingWarmRestarts(o, 25)),
    ),
]


@pytest.mark.parametrize(("name", "params", "make"), CASES, ids=lambda c: str(c)[:40])
def test_lr_curve_equals_torch(name, params, make):
    np.testing.assert_allclose(
        lr_curve(name, 120, BASE, **params), torch_curve(make, 120), rtol=1e-12, atol=0
    )


def test_plateau_equals_torch_on_a_given_loss():
    rng = np.random.default_rng(0)
    losses = list(1.0 / np.sqrt(np.arange(1, 301)) + 0.05 * rng.random(300))
    got = lr_curve("plateau", 300, BASE, metrics=losses, **schedules.PAPER_PARAMS["plateau"])
    expected = torch_curve(lambda o: S.ReduceLROnPlateau(o), 300, metrics=losses)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[-1] < BASE / 100  # the paper's plateau collapses on a noisy loss


def test_plateau_smoothed_window_every_and_warmup():
    losses = list(np.linspace(1, 0.5, 100)) + [0.5] * 200
    got = lr_curve(
        "plateau",
        300,
        BASE,
        metrics=losses,
        window=10,
        every=10,
        patience=30,
        factor=0.5,
        warmup_steps=20,
    )
    # Independent: ramp for 20 steps, then every 10 steps the mean of the last 10 losses.
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=BASE)
    plateau = S.ReduceLROnPlateau(opt, factor=0.5, patience=3)
    ramp = S.LinearLR(opt, 0.01, 1.0, total_iters=20)
    expected = []
    for i in range(300):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        if i < 20:
            ramp.step()
        elif (i + 1 - 20) % 10 == 0:
            plateau.step(float(np.mean(losses[max(20, i - 9) : i + 1])))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[-1] < BASE


def test_plateau_watching_heldout_takes_one_value_per_look():
    looks = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9]
    got = lr_curve(
        "plateau", 60, BASE, metrics=looks, watch="heldout", every=10, patience=20, factor=0.5
    )
    assert np.all(got[:50] == BASE)  # patience of 2 looks: the 3rd bad look (step 50) drops
    assert got[59] == pytest.approx(BASE / 2)


def test_wsd_inverse_sqrt_and_constant_closed_forms():
    curve = lr_curve("wsd", 100, BASE, decay_fraction=0.2, decay_shape="linear")
    np.testing.assert_allclose(curve[:80], BASE)
    np.testing.assert_allclose(curve[80:], BASE * (1 - np.arange(20) / 20))
    sq = lr_curve("wsd", 100, BASE, decay_fraction=0.5, decay_shape="1-sqrt")
    np.testing.assert_allclose(sq[50:], BASE * (1 - np.sqrt(np.arange(50) / 50)))
    inv = lr_curve("inverse_sqrt", 100, BASE, t_ref=10, ramp=5)
    s = np.arange(100)
    np.testing.assert_allclose(inv, BASE * np.minimum(s / 5, 1) / np.sqrt(np.maximum(s / 10, 1)))
    np.testing.assert_allclose(lr_curve("constant", 50, BASE), BASE)
    np.testing.assert_allclose(lr_curve("schedule_free", 50, BASE), BASE)


def test_baseline_is_cosine():
    np.testing.assert_array_equal(lr_curve("baseline", 77), lr_curve("cosine", 77))


def test_paper_choices_collapse_early():
    for name in ("step", "exponential"):
        curve = lr_curve(name, 10_000, BASE, **schedules.PAPER_PARAMS[name])
        assert curve[1000] < BASE * 1e-3, name


def _value(param: Param, steps: int):
    if param.choices:
        return st.sampled_from(param.choices)
    if param.kind == "bool":
        return st.booleans()
    if param.kind == "ints":
        return st.lists(st.integers(1, steps), min_size=1, max_size=4).map(sorted)
    lo = param.low if param.low is not None else -10.0
    hi = (
        param.high
        if param.high is not None
        else (lo + 2 * steps if param.kind == "int" else lo + 100.0)
    )
    if param.kind == "int":
        return st.integers(int(lo) + param.low_open, int(hi) - param.high_open)
    return st.floats(lo, hi, exclude_min=param.low_open, exclude_max=param.high_open)


@st.composite
def any_schedule(draw):
    name = draw(st.sampled_from(sorted(schedules.SCHEDULES)))
    steps = draw(st.integers(2, 300))
    definition = schedules.SCHEDULES[name]
    # Absolute LR floors are drawn below the base LR.
    params = {
        k: draw(st.floats(0, BASE) if k in ("eta_min", "min_lr") else _value(p, steps))
        for k, p in definition.params.items()
        if draw(st.booleans())
    }
    if definition.allows_warmup and draw(st.booleans()):
        params["warmup_steps"] = draw(st.integers(0, steps - 1))
    return name, steps, params


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_schedule())
def test_every_curve_is_finite_and_non_negative(case):
    name, steps, params = case
    curve = lr_curve(name, steps, BASE, **params)
    assert curve.shape == (steps,)
    assert np.all(np.isfinite(curve)) and np.all(curve >= 0)
    assert curve.max() <= BASE * (1 + 1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(n for n, d in schedules.SCHEDULES.items() if d.allows_warmup)),
    st.integers(2, 200),
    st.floats(0.001, 1.0),
)
def test_warmup_ramps_rise_monotonically(name, warmup, start):
    curve = lr_curve(name, warmup + 50, BASE, warmup_steps=warmup, warmup_start_factor=start)
    ramp = curve[: warmup + 1]
    assert np.all(np.diff(ramp) >= -1e-18)
    assert ramp[0] == pytest.approx(BASE * start)
    assert ramp[-1] == pytest.approx(BASE)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 2000), st.floats(0, 1e-4), st.integers(0, 100))
def test_cosine_reaches_eta_min_at_its_end(steps, eta_min, warmup):
    warmup = min(warmup, steps - 1)
    curve = lr_curve("cosine", steps, BASE, eta_min=eta_min, warmup_steps=warmup)
    decay = steps - warmup
    # The last step's LR is one cosine step above eta_min: (1 + cos(pi (T-1)/T)) / 2 of the span.
    gap = (BASE - eta_min) * (1 - math.cos(math.pi / decay)) / 2 if decay > 1 else BASE - eta_min
    assert curve[-1] == pytest.approx(eta_min + gap, rel=1e-9, abs=1e-18)
    assert np.all(np.diff(curve[warmup:]) <= 1e-18)


@settings(max_examples=60, deadline=None)
@given(st.integers(10, 1000), st.floats(0.01, 0.99), st.integers(0, 50))
def test_wsd_is_flat_in_its_stable_phase(steps, fraction, warmup):
    warmup = min(warmup, steps - 1)
    curve = lr_curve("wsd", steps, BASE, decay_fraction=fraction, warmup_steps=warmup)
    decay = max(1, round(fraction * (steps - warmup)))
    stable = curve[warmup : steps - decay]
    assert np.all(stable == BASE)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("warp", {}, "unknown schedule 'warp'; valid schedules: constant, cosine"),
        ("step", {"gamma": 0}, "schedule 'step': gamma must be a float in (0, 1], got 0"),
        ("step", {"gamma": "fast"}, "schedule 'step': gamma must be a float in (0, 1], got 'fast'"),
        ("step", {"step_size": 2.5}, "schedule 'step': step_size must be an int in [1, inf)"),
        ("step", {"size": 3}, "schedule 'step': unknown parameter 'size'; valid parameters:"),
        ("cosine", {"eta_min": -1e-5}, "eta_min must be a float in [0, inf), got -1e-05"),
        ("cosine", {"warmup_steps": 100}, "warmup_steps must be an int in [0, 99]"),
        ("onecycle", {"warmup_steps": 10}, "unknown parameter 'warmup_steps'"),
        ("wsd", {"decay_shape": "exp"}, "decay_shape must be one of linear, cosine, 1-sqrt"),
        ("multistep", {"milestones": [10, -1]}, "milestones must be a list of ints each in [1,"),
        ("plateau", {"watch": "eval"}, "watch must be one of train, heldout, got 'eval'"),
        ("nosuchmodule_xyz:f", {}, "cannot import schedule 'nosuchmodule_xyz:f'"),
    ],
)
def test_bad_schedules_name_the_parameter_and_range(name, params, message):
    with pytest.raises(ValueError) as err:
        lr_curve(name, 100, BASE, **params)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_negative_base_lr():
    with pytest.raises(ValueError, match=r"lr must be a finite float > 0, got -0\.1"):
        lr_curve("cosine", 10, -0.1)


def test_user_defined_schedule_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_sched.py").write_text(
        textwrap.dedent('''
        from torch.optim.lr_scheduler import LambdaLR

        def halving(optimizer, steps, every=10):
            """Halve the LR every `every` steps."""
            return LambdaLR(optimizer, lambda s: 0.5 ** (s // every))

        def broken(optimizer, steps):
            return 42
    ''')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    curve = lr_curve("my_sched:halving", 40, BASE, every=5, warmup_steps=10)
    expected = torch_curve(
        lambda o: warm(o, 10, 0.01, S.LambdaLR(o, lambda s: 0.5 ** (s // 5))), 40
    )
    np.testing.assert_allclose(curve, expected, rtol=1e-12)
    assert schedules.lookup("my_sched:halving").description == "Halve the LR every `every` steps."
    with pytest.raises(ValueError, match="returned int, not a torch LR scheduler"):
        lr_curve("my_sched:broken", 10)
    sys.modules.pop("my_sched", None)
    schedules.user_defined.cache_clear()
