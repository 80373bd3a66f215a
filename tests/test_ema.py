import pytest
import torch
from torch import nn

from schedlab.training.ema import EMA, ema_decay


def test_decay_follows_the_reference_formula():
    assert ema_decay(0, 0.995, 100) is None
    assert ema_decay(100, 0.995, 100) is None
    assert ema_decay(110, 0.995, 100) == pytest.approx(1 - 11 ** (-2 / 3))
    assert ema_decay(9990, 0.995, 100) == 0.995


def test_update_copies_then_averages_every_tenth_step():
    model = nn.Linear(1, 1, bias=False)
    ema = EMA(model, beta=0.995, every=10, warmup=100)
    expected = model.weight.item()
    for step in range(200):
        with torch.no_grad():
            model.weight.fill_(float(step))
        ema.update(step)
        if step % 10 == 0:
            d = ema_decay(step, 0.995, 100)
            expected = float(step) if d is None else d * expected + (1 - d) * float(step)
        assert ema.ema_model.weight.item() == pytest.approx(expected, rel=1e-6)
    assert not ema.ema_model.weight.requires_grad
